/* The slice of the CUDA runtime and NCCL binary interfaces that
 * lwsinit-gpucheck uses, declared here so that building it needs no CUDA
 * toolkit (CI machines and the agent's own image have none): both
 * libraries are loaded at run time with dlopen(3) and every function is
 * reached through a pointer of the types below.
 *
 * Only what is stable across the versions an engine image may carry is
 * declared: the CUDA runtime 11, 12 and 13 (libcudart.so.11.0, .12, .13) and
 * NCCL 2.14 or later (the first with ncclCommInitRankConfig and non-blocking
 * communicators). Sources, checked by tests/gpu/test_gpu_abi.c whenever
 * /usr/local/cuda/include is present:
 *  - CUDA Runtime API reference, "Data types used by CUDA Runtime"
 *    (enum cudaError, enum cudaMemcpyKind, cudaStream_t, struct cudaDeviceProp)
 *    and "Device Management" / "Memory Management" / "Stream Management";
 *    headers driver_types.h and cuda_runtime_api.h.
 *  - NCCL API reference, "Types" (ncclResult_t, ncclDataType_t, ncclRedOp_t,
 *    ncclUniqueId, ncclConfig_t) and "Communicator Creation and
 *    Management"; header nccl.h.
 *
 * Function types rather than pointer types: the fake library in tests/gpu
 * declares its exports with them (`lwsi_cuda_malloc_fn cudaMalloc;`), so the
 * compiler holds the check and the fake to the same prototypes. */
#ifndef LWSINIT_GPU_ABI_H
#define LWSINIT_GPU_ABI_H

#include <limits.h>
#include <stddef.h>

/* ---- CUDA runtime ------------------------------------------------------ */

/* Every enum of these APIs used here (cudaError_t, cudaMemcpyKind,
 * ncclResult_t, ncclDataType_t, ncclRedOp_t) has no negative value, so it is
 * a 4-byte integer in the x86-64 and AArch64 ABIs and GCC and Clang make it
 * compatible with unsigned int (C11 6.7.2.2p4, implementation-defined):
 * declared as unsigned int here, the real prototypes and ours are the same
 * type, which test_gpu_abi.c proves by redeclaring the real functions.
 *
 * cudaError_t. Only the values the check names are listed; any other is
 * printed through cudaGetErrorString. */
typedef unsigned int lwsi_cuda_err;
enum {
  LWSI_CUDA_SUCCESS = 0,                   /* cudaSuccess */
  LWSI_CUDA_ERR_INVALID_VALUE = 1,         /* cudaErrorInvalidValue */
  LWSI_CUDA_ERR_MEMORY_ALLOCATION = 2,     /* cudaErrorMemoryAllocation */
  LWSI_CUDA_ERR_INSUFFICIENT_DRIVER = 35,  /* cudaErrorInsufficientDriver */
  LWSI_CUDA_ERR_NO_DEVICE = 100,           /* cudaErrorNoDevice */
  LWSI_CUDA_ERR_INVALID_DEVICE = 101,      /* cudaErrorInvalidDevice */
  LWSI_CUDA_ERR_NOT_READY = 600,           /* cudaErrorNotReady (cudaStreamQuery) */
  LWSI_CUDA_ERR_UNKNOWN = 999,             /* cudaErrorUnknown */
};

/* enum cudaMemcpyKind */
enum {
  LWSI_CUDA_MEMCPY_HOST_TO_DEVICE = 1, /* cudaMemcpyHostToDevice */
  LWSI_CUDA_MEMCPY_DEVICE_TO_HOST = 2, /* cudaMemcpyDeviceToHost */
};

/* cudaStream_t is `struct CUstream_st *`, opaque. */
typedef struct lwsi_cuda_stream_st *lwsi_cuda_stream;

/* struct cudaDeviceProp changes size between releases (and CUDA 12 exports
 * cudaGetDeviceProperties_v2 next to the CUDA 11 layout), but in every
 * release its first member is `char name[256]`. The check passes a buffer of
 * LWSI_CUDA_PROP_BYTES, far larger than any release's struct (about 1 KiB),
 * and reads only the name. */
#define LWSI_CUDA_PROP_BYTES 16384
#define LWSI_CUDA_NAME_BYTES 256

/* cudaRuntimeGetVersion, cudaDriverGetVersion: 1000 * major + 10 * minor. */
typedef lwsi_cuda_err lwsi_cuda_runtime_get_version_fn(int *version);
typedef lwsi_cuda_err lwsi_cuda_driver_get_version_fn(int *version);
typedef lwsi_cuda_err lwsi_cuda_get_device_count_fn(int *count);
typedef lwsi_cuda_err lwsi_cuda_set_device_fn(int device);
/* prop: struct cudaDeviceProp *, see LWSI_CUDA_PROP_BYTES. */
typedef lwsi_cuda_err lwsi_cuda_get_device_properties_fn(void *prop, int device);
typedef lwsi_cuda_err lwsi_cuda_device_get_pci_bus_id_fn(char *bus_id, int len, int device);
typedef lwsi_cuda_err lwsi_cuda_mem_get_info_fn(size_t *free_bytes, size_t *total_bytes);
typedef lwsi_cuda_err lwsi_cuda_malloc_fn(void **dev_ptr, size_t size);
typedef lwsi_cuda_err lwsi_cuda_free_fn(void *dev_ptr);
/* kind: LWSI_CUDA_MEMCPY_* (enum cudaMemcpyKind). */
typedef lwsi_cuda_err lwsi_cuda_memcpy_fn(void *dst, const void *src, size_t count,
                                          unsigned int kind);
typedef lwsi_cuda_err lwsi_cuda_memset_fn(void *dev_ptr, int value, size_t count);
typedef lwsi_cuda_err lwsi_cuda_device_synchronize_fn(void);
typedef lwsi_cuda_err lwsi_cuda_stream_create_fn(lwsi_cuda_stream *stream);
typedef lwsi_cuda_err lwsi_cuda_stream_query_fn(lwsi_cuda_stream stream);
typedef lwsi_cuda_err lwsi_cuda_stream_synchronize_fn(lwsi_cuda_stream stream);
typedef lwsi_cuda_err lwsi_cuda_stream_destroy_fn(lwsi_cuda_stream stream);
typedef const char *lwsi_cuda_get_error_string_fn(lwsi_cuda_err error);

/* ---- NCCL -------------------------------------------------------------- */

/* ncclResult_t (see lwsi_cuda_err for why unsigned int). */
typedef unsigned int lwsi_nccl_result;
enum {
  LWSI_NCCL_SUCCESS = 0,            /* ncclSuccess */
  LWSI_NCCL_UNHANDLED_CUDA_ERROR = 1,
  LWSI_NCCL_SYSTEM_ERROR = 2,
  LWSI_NCCL_INTERNAL_ERROR = 3,
  LWSI_NCCL_INVALID_ARGUMENT = 4,
  LWSI_NCCL_INVALID_USAGE = 5,
  LWSI_NCCL_REMOTE_ERROR = 6,
  LWSI_NCCL_IN_PROGRESS = 7,        /* ncclInProgress: non-blocking call still running */
};

enum { LWSI_NCCL_FLOAT32 = 7 }; /* ncclDataType_t ncclFloat32 */
enum { LWSI_NCCL_SUM = 0 };     /* ncclRedOp_t ncclSum */

/* ncclUniqueId: 128 opaque bytes, passed BY VALUE to ncclCommInitRank*. */
#define LWSI_NCCL_UNIQUE_ID_BYTES 128
typedef struct {
  char internal[LWSI_NCCL_UNIQUE_ID_BYTES];
} lwsi_nccl_unique_id;

/* ncclComm_t is `struct ncclComm *`, opaque. */
typedef struct lwsi_nccl_comm_st *lwsi_nccl_comm;

/* The head of ncclConfig_t, which grows with each NCCL release. NCCL reads
 * `size` first and copies min(size, its own sizeof) bytes over its defaults
 * (NCCL_CONFIG_INITIALIZER), then resets every field newer than `version`
 * to its default (src/init.cc, parseCommConfig). So a short struct that
 * claims version 2.14.0 is read correctly by NCCL 2.14 and by every later
 * release: blocking is taken from it, everything after is NCCL's default.
 * cga_cluster_size is the field that follows blocking since 2.17; it is
 * declared only so that the struct has no tail padding that NCCL would
 * copy, and set to "undefined" (NCCL_CONFIG_UNDEF_INT). */
struct lwsi_nccl_config {
  size_t size;           /* sizeof(struct lwsi_nccl_config) */
  unsigned int magic;    /* LWSI_NCCL_CONFIG_MAGIC */
  unsigned int version;  /* LWSI_NCCL_CONFIG_VERSION */
  int blocking;          /* 0: non-blocking communicator */
  int cga_cluster_size;  /* LWSI_NCCL_CONFIG_UNDEF_INT */
};
#define LWSI_NCCL_CONFIG_MAGIC 0xcafebeefu
#define LWSI_NCCL_CONFIG_UNDEF_INT INT_MIN
/* NCCL_VERSION(2, 14, 0): versions from 2.9 on are X*10000 + Y*100 + Z,
 * earlier ones X*1000 + Y*100 + Z (nccl.h). */
#define LWSI_NCCL_CONFIG_VERSION 21400u

typedef lwsi_nccl_result lwsi_nccl_get_version_fn(int *version);
typedef lwsi_nccl_result lwsi_nccl_get_unique_id_fn(lwsi_nccl_unique_id *unique_id);
typedef lwsi_nccl_result lwsi_nccl_comm_init_rank_config_fn(lwsi_nccl_comm *comm, int nranks,
                                                             lwsi_nccl_unique_id comm_id, int rank,
                                                             struct lwsi_nccl_config *config);
typedef lwsi_nccl_result lwsi_nccl_comm_get_async_error_fn(lwsi_nccl_comm comm,
                                                            lwsi_nccl_result *async_error);
typedef lwsi_nccl_result lwsi_nccl_comm_finalize_fn(lwsi_nccl_comm comm);
typedef lwsi_nccl_result lwsi_nccl_comm_destroy_fn(lwsi_nccl_comm comm);
typedef lwsi_nccl_result lwsi_nccl_comm_abort_fn(lwsi_nccl_comm comm);
typedef lwsi_nccl_result lwsi_nccl_group_start_fn(void);
typedef lwsi_nccl_result lwsi_nccl_group_end_fn(void);
/* datatype: ncclDataType_t, op: ncclRedOp_t. */
typedef lwsi_nccl_result lwsi_nccl_all_reduce_fn(const void *sendbuff, void *recvbuff,
                                                  size_t count, unsigned int datatype,
                                                  unsigned int op,
                                                  lwsi_nccl_comm comm, lwsi_cuda_stream stream);
typedef const char *lwsi_nccl_get_error_string_fn(lwsi_nccl_result result);
/* Since NCCL 2.13: the last error text of this thread (comm is unused). */
typedef const char *lwsi_nccl_get_last_error_fn(lwsi_nccl_comm comm);

/* ---- NVML (nvml.h), for the GPU-free wait of a restart (gpu-free). */

typedef int lwsi_nvml_return; /* nvmlReturn_t */
#define LWSI_NVML_SUCCESS 0
#define LWSI_NVML_ERROR_INSUFFICIENT_SIZE 7
typedef struct lwsi_nvml_device_st *lwsi_nvml_device; /* nvmlDevice_t */

/* nvmlProcessInfo_t (nvmlProcessInfo_v2_t) of the _v2 and _v3 calls. */
struct lwsi_nvml_process_info {
  unsigned int pid;
  unsigned long long used_gpu_memory;
  unsigned int gpu_instance_id;
  unsigned int compute_instance_id;
};

typedef lwsi_nvml_return lwsi_nvml_init_fn(void);       /* nvmlInit_v2 */
typedef lwsi_nvml_return lwsi_nvml_shutdown_fn(void);   /* nvmlShutdown */
typedef lwsi_nvml_return lwsi_nvml_device_get_count_fn(unsigned int *count); /* _v2 */
typedef lwsi_nvml_return lwsi_nvml_device_get_handle_by_index_fn(unsigned int index,
                                                                  lwsi_nvml_device *device);
/* nvmlDeviceGetComputeRunningProcesses_v3 (and _v2, same layout): count in,
 * entries filled out; INSUFFICIENT_SIZE with the count needed. */
typedef lwsi_nvml_return lwsi_nvml_device_get_compute_running_processes_fn(
    lwsi_nvml_device device, unsigned int *count, struct lwsi_nvml_process_info *infos);
typedef const char *lwsi_nvml_error_string_fn(lwsi_nvml_return r);

#endif
