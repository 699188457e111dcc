/* Stub: filled in by the probes work. */
#include <stddef.h>
