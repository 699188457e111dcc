/* Stub: filled in by the resolver module work. */
#include <stddef.h>
