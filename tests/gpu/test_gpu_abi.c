/* include/lwsinit/gpu_abi.h against the real CUDA runtime and NCCL headers.
 * Built only where they are installed (tests/gpu/meson.build): most checks
 * are at compile time, so that building this file is the test; the TAP
 * lines only report what was compared.
 *
 * The opaque handle types are mapped onto the real tags before the header
 * is read, so that the function types can be compared whole: each real
 * function is redeclared with gpu_abi.h's type, and a mismatch in any
 * parameter or in the return type is a compile error ("conflicting types"). */
#include <cuda_runtime_api.h>
#include <driver_types.h>
#include <nccl.h>
#include <stddef.h>

#define lwsi_cuda_stream_st CUstream_st
#define lwsi_nccl_comm_st ncclComm
#include "lwsinit/gpu_abi.h"

#include "../unit/tap.h"

/* CUDA 12's header renames cudaGetDeviceProperties to the _v2 symbol; the
 * check asks for either, and reads only the name. */
lwsi_cuda_runtime_get_version_fn cudaRuntimeGetVersion;
lwsi_cuda_driver_get_version_fn cudaDriverGetVersion;
lwsi_cuda_get_device_count_fn cudaGetDeviceCount;
lwsi_cuda_set_device_fn cudaSetDevice;
lwsi_cuda_device_get_pci_bus_id_fn cudaDeviceGetPCIBusId;
lwsi_cuda_mem_get_info_fn cudaMemGetInfo;
lwsi_cuda_malloc_fn cudaMalloc;
lwsi_cuda_free_fn cudaFree;
lwsi_cuda_memcpy_fn cudaMemcpy;
lwsi_cuda_memset_fn cudaMemset;
lwsi_cuda_device_synchronize_fn cudaDeviceSynchronize;
lwsi_cuda_stream_create_fn cudaStreamCreate;
lwsi_cuda_stream_query_fn cudaStreamQuery;
lwsi_cuda_stream_synchronize_fn cudaStreamSynchronize;
lwsi_cuda_stream_destroy_fn cudaStreamDestroy;
lwsi_cuda_get_error_string_fn cudaGetErrorString;

lwsi_nccl_get_version_fn ncclGetVersion;
lwsi_nccl_comm_get_async_error_fn ncclCommGetAsyncError;
lwsi_nccl_comm_finalize_fn ncclCommFinalize;
lwsi_nccl_comm_destroy_fn ncclCommDestroy;
lwsi_nccl_comm_abort_fn ncclCommAbort;
lwsi_nccl_group_start_fn ncclGroupStart;
lwsi_nccl_group_end_fn ncclGroupEnd;
lwsi_nccl_all_reduce_fn ncclAllReduce;
lwsi_nccl_get_error_string_fn ncclGetErrorString;
lwsi_nccl_get_last_error_fn ncclGetLastError;

/* Not redeclarable (an anonymous struct by value, a struct pointer we keep
 * opaque): compared member by member below instead. */
_Static_assert(sizeof(lwsi_nccl_unique_id) == sizeof(ncclUniqueId), "ncclUniqueId size");
_Static_assert(LWSI_NCCL_UNIQUE_ID_BYTES == NCCL_UNIQUE_ID_BYTES, "NCCL_UNIQUE_ID_BYTES");
_Static_assert(offsetof(struct lwsi_nccl_config, size) == offsetof(ncclConfig_t, size), "size");
_Static_assert(offsetof(struct lwsi_nccl_config, magic) == offsetof(ncclConfig_t, magic), "magic");
_Static_assert(offsetof(struct lwsi_nccl_config, version) == offsetof(ncclConfig_t, version),
               "version");
_Static_assert(offsetof(struct lwsi_nccl_config, blocking) == offsetof(ncclConfig_t, blocking),
               "blocking");
_Static_assert(offsetof(struct lwsi_nccl_config, cga_cluster_size) ==
                   offsetof(ncclConfig_t, cgaClusterSize),
               "cgaClusterSize");
_Static_assert(sizeof(struct lwsi_nccl_config) <= sizeof(ncclConfig_t), "a head of ncclConfig_t");
_Static_assert(LWSI_NCCL_CONFIG_UNDEF_INT == NCCL_CONFIG_UNDEF_INT, "NCCL_CONFIG_UNDEF_INT");
_Static_assert(LWSI_NCCL_CONFIG_VERSION == NCCL_VERSION(2, 14, 0), "NCCL_VERSION(2,14,0)");
_Static_assert(offsetof(struct cudaDeviceProp, name) == 0, "name first in cudaDeviceProp");
_Static_assert(sizeof(((struct cudaDeviceProp *)0)->name) == LWSI_CUDA_NAME_BYTES, "name[256]");
_Static_assert(sizeof(struct cudaDeviceProp) <= LWSI_CUDA_PROP_BYTES, "prop buffer is enough");

/* Enumerators of different enums: compared as numbers (-Wenum-compare). */
#define SAME(ours, real) _Static_assert((long)(ours) == (long)(real), #ours " == " #real)
SAME(LWSI_CUDA_SUCCESS, cudaSuccess);
SAME(LWSI_CUDA_ERR_INVALID_VALUE, cudaErrorInvalidValue);
SAME(LWSI_CUDA_ERR_MEMORY_ALLOCATION, cudaErrorMemoryAllocation);
SAME(LWSI_CUDA_ERR_INSUFFICIENT_DRIVER, cudaErrorInsufficientDriver);
SAME(LWSI_CUDA_ERR_NO_DEVICE, cudaErrorNoDevice);
SAME(LWSI_CUDA_ERR_INVALID_DEVICE, cudaErrorInvalidDevice);
SAME(LWSI_CUDA_ERR_NOT_READY, cudaErrorNotReady);
SAME(LWSI_CUDA_ERR_UNKNOWN, cudaErrorUnknown);
SAME(LWSI_CUDA_MEMCPY_HOST_TO_DEVICE, cudaMemcpyHostToDevice);
SAME(LWSI_CUDA_MEMCPY_DEVICE_TO_HOST, cudaMemcpyDeviceToHost);
SAME(LWSI_NCCL_SUCCESS, ncclSuccess);
SAME(LWSI_NCCL_UNHANDLED_CUDA_ERROR, ncclUnhandledCudaError);
SAME(LWSI_NCCL_SYSTEM_ERROR, ncclSystemError);
SAME(LWSI_NCCL_INTERNAL_ERROR, ncclInternalError);
SAME(LWSI_NCCL_INVALID_ARGUMENT, ncclInvalidArgument);
SAME(LWSI_NCCL_INVALID_USAGE, ncclInvalidUsage);
SAME(LWSI_NCCL_REMOTE_ERROR, ncclRemoteError);
SAME(LWSI_NCCL_IN_PROGRESS, ncclInProgress);
SAME(LWSI_NCCL_FLOAT32, ncclFloat32);
SAME(LWSI_NCCL_SUM, ncclSum);
_Static_assert(sizeof(cudaError_t) == sizeof(lwsi_cuda_err), "cudaError_t size");
_Static_assert(sizeof(ncclResult_t) == sizeof(lwsi_nccl_result), "ncclResult_t size");

int main(void)
{
  TAP_OK(1, "cudaError and cudaMemcpyKind values (CUDA runtime headers %d)", CUDART_VERSION);
  TAP_OK(1, "ncclResult_t, ncclFloat32, ncclSum (NCCL headers %d.%d.%d)", NCCL_MAJOR, NCCL_MINOR,
         NCCL_PATCH);
  TAP_OK(1, "prototypes of 26 functions match (redeclared with gpu_abi.h types)");
  TAP_OK(sizeof(struct cudaDeviceProp) <= LWSI_CUDA_PROP_BYTES,
         "struct cudaDeviceProp is %zu bytes, name at offset 0, the buffer %d",
         sizeof(struct cudaDeviceProp), LWSI_CUDA_PROP_BYTES);
  ncclConfig_t real = NCCL_CONFIG_INITIALIZER;
  TAP_OK(real.magic == LWSI_NCCL_CONFIG_MAGIC && real.blocking == LWSI_NCCL_CONFIG_UNDEF_INT &&
             real.version >= LWSI_NCCL_CONFIG_VERSION && real.size == sizeof(ncclConfig_t),
         "NCCL_CONFIG_INITIALIZER: magic 0x%x, version %u; our head is %zu of its %zu bytes",
         real.magic, real.version, sizeof(struct lwsi_nccl_config), sizeof(ncclConfig_t));
  return tap_done();
}
