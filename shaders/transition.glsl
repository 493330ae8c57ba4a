// The mix of two canvas-sized pictures during a scene transition, one fullscreen
// triangle. Both are premultiplied RGBA with BGRA-ordered storage (raw_gl.py):
// the mix treats the four channels alike, so it never swaps them. Canvas pixel
// (x, y), origin top-left, is texel (x, y) of every canvas texture (layer.glsl
// says why), so a whole-pixel offset is an exact copy: texelFetch, no filtering.
// FADE: (1 - u_weight) * from + u_weight * to, pixel by pixel.
// MOVE (slide, push, wipe): a pixel inside u_to_region is the incoming picture
// moved by u_to_offset, any other the outgoing picture moved by u_from_offset.

#include "fullscreen.glsl"

#if defined VERTEX_SHADER

void main() {
    emit_fullscreen_triangle();
}

#elif defined FRAGMENT_SHADER

uniform sampler2D u_from;
uniform sampler2D u_to;

out vec4 out_color;

#if defined FADE
uniform float u_weight;

void main() {
    ivec2 p = ivec2(gl_FragCoord.xy);
    out_color = mix(texelFetch(u_from, p, 0), texelFetch(u_to, p, 0), u_weight);
}
#else
uniform ivec2 u_from_offset;
uniform ivec2 u_to_offset;
uniform ivec4 u_to_region;  // x0, y0, x1, y1: x1 and y1 excluded

void main() {
    ivec2 p = ivec2(gl_FragCoord.xy);
    ivec2 last = textureSize(u_to, 0) - 1;
    bool incoming = all(greaterThanEqual(p, u_to_region.xy)) && all(lessThan(p, u_to_region.zw));
    if (incoming) {
        out_color = texelFetch(u_to, clamp(p - u_to_offset, ivec2(0), last), 0);
    } else {
        out_color = texelFetch(u_from, clamp(p - u_from_offset, ivec2(0), last), 0);
    }
}
#endif

#endif
