#version 450
#extension GL_GOOGLE_include_directive : require
#include "act.glsl"
// y = f(x) for the unary activations, the affine map and clamping; OP selects the function
// (for clamp, mul and add carry the lower and upper bounds).
layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint OP = 0;  // 0 silu, 1 gelu (erf), 2 gelu (tanh), 3 quick gelu, 4 affine, 5 clamp
layout(std430, binding = 0) readonly buffer X { ACT x[]; };
layout(std430, binding = 1) writeonly buffer Y { ACT y[]; };
layout(push_constant) uniform P { uint count; float mul, add; } p;

#include "common.glsl"

void main() {
    for (uint i = GLOBAL_INDEX; i < p.count; i += GLOBAL_STRIDE) {
        float v = float(x[i]);
        if (OP == 0u) v = silu(v);
        else if (OP == 1u) v = gelu_erf(v);
        else if (OP == 2u) v = gelu_tanh(v);
        else if (OP == 3u) v = v / (1.0 + exp(-1.702 * v));
        else if (OP == 4u) v = v * p.mul + p.add;
        else v = min(max(v, p.mul), p.add);
        y[i] = ACT(v);
    }
}
