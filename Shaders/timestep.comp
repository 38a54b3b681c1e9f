#version 450
#extension GL_GOOGLE_include_directive : require
#include "act.glsl"
// Sinusoidal timestep embedding. The frequencies come from the host (computed there in double
// as the reference does), and the argument is reduced to [-π, π] before sin/cos, whose precision
// Vulkan only defines in that range.
layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint TDT = 0;  // timesteps stored as f32 (0) or f16 (1)
layout(std430, binding = 0) readonly buffer T { uint t[]; };
layout(std430, binding = 1) readonly buffer F { float freqs[]; };
layout(std430, binding = 2) writeonly buffer Y { ACT y[]; };
layout(push_constant) uniform P { uint count, dim, half_, flip; float scale; } p;

#include "common.glsl"

void main() {
    for (uint i = GLOBAL_INDEX; i < p.count; i += GLOBAL_STRIDE) {
        uint r = i / p.dim, j = i % p.dim;
        if (j >= 2u * p.half_) { y[i] = ACT(0.0); continue; }
        uint f = j % p.half_;
        precise float arg = p.scale * (LOAD_PACKED(t, r, TDT) * freqs[f]);
        // Cody–Waite reduction by 2π split into an exactly representable head and a tail.
        precise float kq = round(arg * 0.15915494309189535);
        precise float red = (arg - kq * 6.28125) - kq * 0.0019353071795864769;
        bool first = j < p.half_;
        bool useCos = (p.flip != 0u) == first;
        y[i] = ACT(useCos ? cos(red) : sin(red));
    }
}
