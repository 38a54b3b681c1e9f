#version 450
#extension GL_GOOGLE_include_directive : require
#include "act.glsl"
#extension GL_KHR_shader_subgroup_arithmetic : require
// Subgroup-reduction variant (devices with subgroup arithmetic in compute shaders).
#define USE_SUBGROUP 1
#include "groupnorm.glsl"
