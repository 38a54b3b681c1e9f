// Workgroup-wide reductions. With USE_SUBGROUP the subgroup reduces first (its size comes from
// the device: 8 on lavapipe, 32 on NVIDIA, 32/64 on AMD; never assumed), one partial per
// subgroup goes through shared memory. Without it a shared-memory tree serves devices that lack
// subgroup arithmetic. The workgroup size must be a power of two.
shared float red_scratch[gl_WorkGroupSize.x];

float wg_reduce(float v, bool isMax) {
#ifdef USE_SUBGROUP
    v = isMax ? subgroupMax(v) : subgroupAdd(v);
    if (subgroupElect()) red_scratch[gl_SubgroupID] = v;
    barrier();
    float r = red_scratch[0];
    for (uint i = 1u; i < gl_NumSubgroups; i++) r = isMax ? max(r, red_scratch[i]) : r + red_scratch[i];
    barrier();
    return r;
#else
    uint t = gl_LocalInvocationID.x;
    red_scratch[t] = v;
    barrier();
    for (uint s = gl_WorkGroupSize.x / 2u; s > 0u; s >>= 1u) {
        if (t < s) red_scratch[t] = isMax ? max(red_scratch[t], red_scratch[t + s]) : red_scratch[t] + red_scratch[t + s];
        barrier();
    }
    float r = red_scratch[0];
    barrier();
    return r;
#endif
}
float wg_sum(float v) { return wg_reduce(v, false); }
float wg_max(float v) { return wg_reduce(v, true); }
