/* backend.c — picks the device backend by name; the implementations live in
 * backend_cpu.c and (CUDA builds only) backend_cuda.c. */
#include "backend.h"

#include <string.h>

Status backend_create(Backend **out, const char *name, DType dtype, int device, Error *err)
{
    *out = NULL;
    if (strcmp(name, "cpu") == 0) return backend_cpu_create(out, dtype, err);
    if (strcmp(name, "cuda") == 0) {
#ifdef GPT2_ENGINE_HAVE_CUDA
        int count = backend_cuda_device_count();
        if (count <= 0)
            return error_set(err, GPT2_ERR_VALUE,
                             "device='cuda' but no CUDA GPU is visible (use device='cpu')");
        if (device < 0 || device >= count)
            return error_set(err, GPT2_ERR_VALUE, "CUDA device %d does not exist (%d visible)",
                             device, count);
        return backend_cuda_create(out, dtype, device, err);
#else
        (void)device;
        return error_set(err, GPT2_ERR_VALUE,
                         "device='cuda' but gpt2_engine was built without CUDA (nvcc, cuBLAS "
                         "or NCCL were missing at build time); use device='cpu'");
#endif
    }
    return error_set(err, GPT2_ERR_VALUE, "unknown device '%s' (valid: 'cpu', 'cuda')", name);
}

void backend_destroy(Backend *b)
{
    if (b && b->ops && b->ops->destroy) b->ops->destroy(b);
}

int backend_cuda_available(int *count)
{
#ifdef GPT2_ENGINE_HAVE_CUDA
    int n = backend_cuda_device_count();
#else
    int n = 0;
#endif
    if (count) *count = n > 0 ? n : 0;
    return n > 0;
}
