/* Stub: filled in by the rdzv module work. */
#include <stddef.h>
