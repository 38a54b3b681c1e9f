#version 450
#extension GL_GOOGLE_include_directive : require
#include "act.glsl"
// Shared-memory-reduction fallback for devices without subgroup arithmetic.
#include "softmax.glsl"
