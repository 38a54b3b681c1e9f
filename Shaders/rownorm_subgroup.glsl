// Layer-norm and softmax rows handled by one subgroup each (no barriers, no shared memory): the
// executor picks these for rows up to a few thousand elements on devices with subgroup
// arithmetic. The workgroup size is a multiple of every subgroup size the device may use, so
// every subgroup is full and strides of gl_SubgroupSize cover a row.
#define ROWS_BEGIN for (uint row = gl_WorkGroupID.x * gl_NumSubgroups + gl_SubgroupID; row < p.rows; \
                        row += gl_NumWorkGroups.x * gl_NumSubgroups)
#define LANE_LOOP(i) for (uint i = gl_SubgroupInvocationID; i < p.D; i += gl_SubgroupSize)
