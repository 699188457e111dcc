/* lwsinit-gpucheck gpu-free: waits until this node's GPUs hold no process
 * of an old engine (a group restart in place, --on-failure restart). */
#ifndef LWSINIT_GPUCHECK_GPUFREE_H
#define LWSINIT_GPUCHECK_GPUFREE_H

/* The mode's main: argv[1] is "gpu-free". Returns the exit status: 0 when
 * the GPUs are free, 1 when they were not within --timeout-ms, 2 for a
 * usage error. */
int lwsi_gpufree_main(int argc, char **argv);

#endif
