#version 450
#extension GL_GOOGLE_include_directive : require
#include "act.glsl"
// The im2col buffer of a convolution, for its GEMM on tensor cores: for every image and every
// k = (c, ky, kx), row k holds the gathered inputs of output columns n0 … n0 + nc − 1 (zero
// outside the padded border): col[(img · K + k) · ldcol + j] = x[img, c, oy·sh − ph + ky,
// ox·sw − pw + kx] with (oy, ox) the output position n0 + j. One invocation per element; the k
// table is conv2d.comp's (offset c·H·W + ky·W + kx, ky << 16 | kx). Dispatched as
// (⌈nc / workgroup⌉, K, images); img0 is the first image.
layout(local_size_x_id = 0) in;
layout(std430, binding = 0) readonly buffer X { ACT x[]; };
layout(std430, binding = 1) readonly buffer KTab { ivec2 ktab[]; };
layout(std430, binding = 2) writeonly buffer Col { ACT col[]; };
layout(push_constant) uniform P {
    uint C, H, W, OW, sh, sw, ph, pw, n0, nc, ldcol, K, img0;
} p;

void main() {
    uint j = gl_GlobalInvocationID.x, k = gl_WorkGroupID.y, img = gl_WorkGroupID.z;
    if (j >= p.nc) return;
    uint n = p.n0 + j;
    int y0 = int((n / p.OW) * p.sh) - int(p.ph), x0 = int((n % p.OW) * p.sw) - int(p.pw);
    ivec2 t = ktab[k];
    int iy = y0 + (t.y >> 16), ix = x0 + (t.y & 0xffff);
    float v = 0.0;
    if (iy >= 0 && iy < int(p.H) && ix >= 0 && ix < int(p.W))
        v = float(x[(p.img0 + img) * p.C * p.H * p.W + uint(t.x + y0 * int(p.W) + x0)]);
    col[(img * p.K + k) * p.ldcol + j] = ACT(v);
}
