// One triangle that covers the viewport, from gl_VertexID alone (no vertex buffer).
#if defined VERTEX_SHADER
void emit_fullscreen_triangle() {
    vec2 corner = vec2(float((gl_VertexID << 1) & 2), float(gl_VertexID & 2));
    gl_Position = vec4(corner * 2.0 - 1.0, 0.0, 1.0);
}
#endif
