// Y'CbCr <-> R'G'B' for 8-bit limited ("studio") range, BT.601 and BT.709.
// u_matrix: 0 = BT.601 (Kr 0.299, Kb 0.114), 1 = BT.709 (Kr 0.2126, Kb 0.0722).
// Values are normalized to 0..1 as GL stores unorm8: 16/255 is black, 235/255 white,
// chroma is centred on 128/255 with a 224/255 excursion.

vec2 luma_coefficients(int matrix) {
    return matrix == 0 ? vec2(0.299, 0.114) : vec2(0.2126, 0.0722);
}

vec3 rgb_to_ycbcr_limited(vec3 rgb, int matrix) {
    vec2 k = luma_coefficients(matrix);
    float kr = k.x;
    float kb = k.y;
    float y = dot(rgb, vec3(kr, 1.0 - kr - kb, kb));
    float cb = (rgb.b - y) / (2.0 * (1.0 - kb));
    float cr = (rgb.r - y) / (2.0 * (1.0 - kr));
    return vec3(16.0 + 219.0 * y, 128.0 + 224.0 * cb, 128.0 + 224.0 * cr) / 255.0;
}

vec3 ycbcr_limited_to_rgb(vec3 ycbcr, int matrix) {
    vec2 k = luma_coefficients(matrix);
    float kr = k.x;
    float kb = k.y;
    float kg = 1.0 - kr - kb;
    float y = (ycbcr.x * 255.0 - 16.0) / 219.0;
    float cb = (ycbcr.y * 255.0 - 128.0) / 224.0;
    float cr = (ycbcr.z * 255.0 - 128.0) / 224.0;
    float r = y + 2.0 * (1.0 - kr) * cr;
    float b = y + 2.0 * (1.0 - kb) * cb;
    float g = (y - kr * r - kb * b) / kg;
    return clamp(vec3(r, g, b), 0.0, 1.0);
}
