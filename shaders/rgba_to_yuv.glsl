// Output conversion: the composited RGBA frame to limited-range Y'CbCr planes,
// so only 1.5 bytes per pixel are read back. One program per target:
// LUMA (R8, full size), CHROMA_NV12 (RG8, half size), CHROMA_I420 (two R8
// attachments, half size). A chroma texel sits at the centre of its 2x2 luma
// block, where one bilinear tap is exactly the mean of the four pixels.
// The frame has BGRA-ordered storage holding RGBA (daemon/render/raw_gl.py):
// the shader's red is the stored blue, so the colour is read as .bgr.

#include "color.glsl"
#include "fullscreen.glsl"

#if defined VERTEX_SHADER

void main() {
    emit_fullscreen_triangle();
}

#elif defined FRAGMENT_SHADER

uniform sampler2D u_frame;      // premultiplied RGBA (stored as BGRA), canvas size
uniform int u_matrix;

#if defined LUMA
out float out_y;
void main() {
    vec3 rgb = texelFetch(u_frame, ivec2(gl_FragCoord.xy), 0).bgr;
    out_y = rgb_to_ycbcr_limited(rgb, u_matrix).x;
}
#else
uniform vec2 u_frame_size;
vec2 chroma_here() {
    vec2 uv = 2.0 * gl_FragCoord.xy / u_frame_size;
    return rgb_to_ycbcr_limited(texture(u_frame, uv).bgr, u_matrix).yz;
}
#if defined CHROMA_NV12
out vec2 out_cbcr;
void main() {
    out_cbcr = chroma_here();
}
#else
layout(location = 0) out float out_cb;
layout(location = 1) out float out_cr;
void main() {
    vec2 cbcr = chroma_here();
    out_cb = cbcr.x;
    out_cr = cbcr.y;
}
#endif
#endif

#endif
