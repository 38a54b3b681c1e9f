#version 450
#extension GL_GOOGLE_include_directive : require
#include "act.glsl"
// Rows of a table [V, D] (f32 or packed f16, WDT) picked by i32 ids. Ids are checked on the host
// before a run; an out-of-range id still cannot read outside the table.
layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint WDT = 0;
layout(std430, binding = 0) readonly buffer I { int ids[]; };
layout(std430, binding = 1) readonly buffer Tb { uint table[]; };
layout(std430, binding = 2) writeonly buffer Y { ACT y[]; };
layout(push_constant) uniform P { uint count, D, V; } p;

#include "common.glsl"

void main() {
    for (uint i = GLOBAL_INDEX; i < p.count; i += GLOBAL_STRIDE) {
        uint r = i / p.D, d = i % p.D;
        int id = ids[r];
        y[i] = ACT((id >= 0 && uint(id) < p.V) ? LOAD_PACKED(table, uint(id) * p.D + d, WDT) : uintBitsToFloat(0x7fc00000u));
    }
}
