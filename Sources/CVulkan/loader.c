#include "cvulkan.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

static pthread_once_t once = PTHREAD_ONCE_INIT;
static void *library;
static PFN_vkGetInstanceProcAddr get_instance_proc_addr;
static char open_error[512];

static void open_loader(void) {
    // LUMEN_VULKAN_LOADER, when set, is the only library tried (so "no loader" can be tested).
    const char *chosen = getenv("LUMEN_VULKAN_LOADER");
    const char *names[] = {"libvulkan.so.1", "libvulkan.so"};
    if (chosen && chosen[0]) names[0] = chosen, names[1] = NULL;
    for (unsigned i = 0; i < sizeof names / sizeof names[0]; i++) {
        if (!names[i]) continue;
        library = dlopen(names[i], RTLD_NOW | RTLD_LOCAL);
        if (library) break;
        snprintf(open_error, sizeof open_error, "%s", dlerror());
    }
    if (!library) return;
    get_instance_proc_addr = (PFN_vkGetInstanceProcAddr)dlsym(library, "vkGetInstanceProcAddr");
    if (!get_instance_proc_addr) {
        snprintf(open_error, sizeof open_error, "the Vulkan loader has no vkGetInstanceProcAddr");
        dlclose(library);
        library = NULL;
    }
}

int lumen_vk_open(void) {
    pthread_once(&once, open_loader);
    return get_instance_proc_addr ? 0 : -1;
}

const char *lumen_vk_open_error(void) { return open_error[0] ? open_error : "libvulkan.so.1 was not found"; }

void lumen_vk_load_global(LumenVkFunctions *fns) {
    fns->vkGetInstanceProcAddr = get_instance_proc_addr;
#define LOAD(name) fns->name = (PFN_##name)get_instance_proc_addr(NULL, #name);
    LUMEN_VK_GLOBAL_FUNCS(LOAD)
#undef LOAD
}

void lumen_vk_load_instance(LumenVkFunctions *fns, VkInstance instance) {
#define LOAD(name) fns->name = (PFN_##name)get_instance_proc_addr(instance, #name);
    LUMEN_VK_INSTANCE_FUNCS(LOAD)
#undef LOAD
}

const char *lumen_vk_load_device(LumenVkFunctions *fns, VkDevice device) {
    const char *missing = NULL;
#define LOAD(name)                                                       \
    fns->name = (PFN_##name)fns->vkGetDeviceProcAddr(device, #name);     \
    if (!fns->name && !missing) missing = #name;
    LUMEN_VK_DEVICE_FUNCS(LOAD)
#undef LOAD
    return missing;
}
