// The activation storage type. Every kernel is built twice: with f32 activations, and with
// ACT_F16 defined (module name suffixed "_f16") for f16 activations on devices with 16-bit
// storage buffers. Arithmetic stays f32 either way: values are widened on load (float(x)) and
// rounded on store (ACT(v)), so only storageBuffer16BitAccess is needed, not shaderFloat16.
#ifdef ACT_F16
#extension GL_EXT_shader_16bit_storage : require
#define ACT float16_t
#else
#define ACT float
#endif
