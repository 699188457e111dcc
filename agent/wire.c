/* Stub: filled in by the wire module work. */
#include <stddef.h>
