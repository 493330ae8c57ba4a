// Input conversion: an NV12 or I420 source (uploaded as 1.5 bytes per pixel)
// to an RGBA texture the layer pass samples like any other source.
// Chroma is taken as sited at the centre of each 2x2 luma block and
// interpolated bilinearly. Defines: NV12 or I420.
// The target has BGRA-ordered storage holding RGBA (daemon/render/raw_gl.py):
// the shader's red is the stored blue, so the colour is written as .bgr.

#include "color.glsl"
#include "fullscreen.glsl"

#if defined VERTEX_SHADER

void main() {
    emit_fullscreen_triangle();
}

#elif defined FRAGMENT_SHADER

uniform sampler2D u_luma;
#if defined NV12
uniform sampler2D u_chroma;     // RG = Cb, Cr
#else
uniform sampler2D u_cb;
uniform sampler2D u_cr;
#endif
uniform vec2 u_size;            // luma size in pixels
uniform int u_matrix;

out vec4 out_color;

void main() {
    vec2 uv = gl_FragCoord.xy / u_size;
    float y = texelFetch(u_luma, ivec2(gl_FragCoord.xy), 0).r;
#if defined NV12
    vec2 cbcr = texture(u_chroma, uv).rg;
#else
    vec2 cbcr = vec2(texture(u_cb, uv).r, texture(u_cr, uv).r);
#endif
    out_color = vec4(ycbcr_limited_to_rgb(vec3(y, cbcr), u_matrix).bgr, 1.0);
}

#endif
