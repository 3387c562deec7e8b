// The module is its header (CPrefetch.h); this file only gives the target a source.
#include "CPrefetch.h"
