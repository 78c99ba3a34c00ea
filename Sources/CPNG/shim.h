// Shim over libpng's simplified API (png_image_*), which needs no setjmp. Adds nothing of its own.
#include <png.h>
