// One layer (video, image or text) as a quad: placed, rotated clockwise about
// its centre, its texture coordinates remapped to the crop window (mirrored by
// a negative step), an optional anti-aliased circle mask, and opacity.
// Output is premultiplied alpha; the pipeline blends with (ONE, ONE_MINUS_SRC_ALPHA),
// or for the PASS variant with (CONSTANT_ALPHA, ONE_MINUS_CONSTANT_ALPHA).
// Canvas pixel rows run top to bottom in memory, so canvas y maps to NDC
// without a flip: row 0 of every texture and of the read-back frame is the top.

#if defined VERTEX_SHADER

in vec2 in_corner;  // unit quad, (0,0) top-left .. (1,1) bottom-right

uniform vec2 u_canvas_size;
uniform vec2 u_center;      // rect centre, canvas pixels
uniform vec2 u_size;        // rect size, canvas pixels
uniform vec2 u_rotation;    // (cos, sin) of the clockwise angle
uniform vec2 u_uv_origin;   // texture coordinate at the top-left corner
uniform vec2 u_uv_step;     // change across the quad (negative when mirrored)

out vec2 v_uv;
out vec2 v_local;           // pixels from the rect centre, before rotation

void main() {
    v_local = (in_corner - 0.5) * u_size;
    // y points down on the canvas, so this standard rotation turns clockwise on screen.
    vec2 turned = vec2(
        v_local.x * u_rotation.x - v_local.y * u_rotation.y,
        v_local.x * u_rotation.y + v_local.y * u_rotation.x
    );
    vec2 position = u_center + turned;
    gl_Position = vec4(position / u_canvas_size * 2.0 - 1.0, 0.0, 1.0);
    v_uv = u_uv_origin + in_corner * u_uv_step;
}

#elif defined FRAGMENT_SHADER

in vec2 v_uv;
in vec2 v_local;

uniform sampler2D u_texture;
uniform float u_opacity;
uniform bool u_premultiply;     // source texture holds straight alpha
uniform float u_circle_radius;  // <= 0: no circle mask

out vec4 out_color;

#if defined PASS
// An opaque source without a circle: the texel as is; the pipeline applies the
// opacity with constant-alpha blending (render/layer_pass.py says why).
void main() {
    out_color = texture(u_texture, v_uv);
}
#elif defined PLAIN
// The common case (premultiplied or opaque source, no circle), without the
// uniform branches: llvmpipe's fragment code is most of a frame's cost.
void main() {
    out_color = texture(u_texture, v_uv) * u_opacity;
}
#else
void main() {
    vec4 color = texture(u_texture, v_uv);
    if (u_premultiply) {
        color.rgb *= color.a;
    }
    if (u_circle_radius > 0.0) {
        // Coverage of a one-pixel-wide ramp across the edge: anti-aliased, no halo.
        float coverage = clamp(u_circle_radius - length(v_local) + 0.5, 0.0, 1.0);
        color *= coverage;
    }
    out_color = color * u_opacity;
}
#endif

#endif
