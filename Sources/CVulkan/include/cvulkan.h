#ifndef LUMEN_CVULKAN_H
#define LUMEN_CVULKAN_H

// Vulkan without a link-time dependency: the loader (libvulkan.so.1) is opened with dlopen at
// run time, so a binary built here starts (and falls back to the CPU) on a machine without it.
#define VK_NO_PROTOTYPES
#include <vulkan/vulkan.h>

#ifdef __cplusplus
extern "C" {
#endif

// The functions Lumen calls, resolved into a table per instance/device.
#define LUMEN_VK_GLOBAL_FUNCS(X) \
    X(vkCreateInstance) X(vkEnumerateInstanceExtensionProperties) X(vkEnumerateInstanceLayerProperties) \
    X(vkEnumerateInstanceVersion)

#define LUMEN_VK_INSTANCE_FUNCS(X) \
    X(vkDestroyInstance) X(vkEnumeratePhysicalDevices) X(vkGetPhysicalDeviceProperties) \
    X(vkGetPhysicalDeviceProperties2) X(vkGetPhysicalDeviceFeatures2) X(vkGetPhysicalDeviceMemoryProperties) \
    X(vkGetPhysicalDeviceQueueFamilyProperties) X(vkEnumerateDeviceExtensionProperties) X(vkCreateDevice) \
    X(vkGetDeviceProcAddr) X(vkCreateDebugUtilsMessengerEXT) X(vkDestroyDebugUtilsMessengerEXT)

#define LUMEN_VK_DEVICE_FUNCS(X) \
    X(vkDestroyDevice) X(vkGetDeviceQueue) X(vkDeviceWaitIdle) X(vkAllocateMemory) X(vkFreeMemory) \
    X(vkMapMemory) X(vkUnmapMemory) X(vkCreateBuffer) X(vkDestroyBuffer) X(vkGetBufferMemoryRequirements) \
    X(vkBindBufferMemory) X(vkCreateShaderModule) X(vkDestroyShaderModule) X(vkCreatePipelineCache) \
    X(vkDestroyPipelineCache) X(vkGetPipelineCacheData) X(vkCreateDescriptorSetLayout) \
    X(vkDestroyDescriptorSetLayout) X(vkCreatePipelineLayout) X(vkDestroyPipelineLayout) \
    X(vkCreateComputePipelines) X(vkDestroyPipeline) X(vkCreateDescriptorPool) X(vkDestroyDescriptorPool) \
    X(vkAllocateDescriptorSets) X(vkUpdateDescriptorSets) X(vkCreateCommandPool) X(vkDestroyCommandPool) \
    X(vkAllocateCommandBuffers) X(vkFreeCommandBuffers) X(vkBeginCommandBuffer) X(vkEndCommandBuffer) \
    X(vkCmdBindPipeline) X(vkCmdBindDescriptorSets) X(vkCmdPushConstants) X(vkCmdDispatch) \
    X(vkCmdPipelineBarrier) X(vkCmdCopyBuffer) X(vkCmdFillBuffer) X(vkCmdWriteTimestamp) \
    X(vkCmdResetQueryPool) X(vkCreateQueryPool) X(vkDestroyQueryPool) X(vkGetQueryPoolResults) \
    X(vkQueueSubmit) X(vkQueueWaitIdle) X(vkCreateFence) X(vkDestroyFence) X(vkWaitForFences) X(vkResetFences)

#define LUMEN_VK_FIELD(name) PFN_##name name;
typedef struct LumenVkFunctions {
    PFN_vkGetInstanceProcAddr vkGetInstanceProcAddr;
    LUMEN_VK_GLOBAL_FUNCS(LUMEN_VK_FIELD)
    LUMEN_VK_INSTANCE_FUNCS(LUMEN_VK_FIELD)
    LUMEN_VK_DEVICE_FUNCS(LUMEN_VK_FIELD)
} LumenVkFunctions;
#undef LUMEN_VK_FIELD

/// Opens the Vulkan loader once per process (LUMEN_VULKAN_LOADER, when set, is the only library
/// name tried).
/// Returns 0 on success; otherwise lumen_vk_open_error() says why.
int lumen_vk_open(void);
const char *lumen_vk_open_error(void);

/// Fills the global entry points (vkCreateInstance, …). Requires lumen_vk_open() == 0.
void lumen_vk_load_global(LumenVkFunctions *fns);
/// Fills the instance-level entry points for `instance`.
void lumen_vk_load_instance(LumenVkFunctions *fns, VkInstance instance);
/// Fills the device-level entry points for `device` (after lumen_vk_load_instance).
/// Returns the name of the first function that could not be resolved, or NULL.
const char *lumen_vk_load_device(LumenVkFunctions *fns, VkDevice device);

#ifdef __cplusplus
}
#endif
#endif
