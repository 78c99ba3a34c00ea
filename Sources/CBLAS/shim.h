// Shim over the system CBLAS (OpenBLAS on Linux). Adds nothing of its own; OpenBLAS's cblas.h
// also declares openblas_set_num_threads and openblas_get_corename, which SDTensor uses.
#include <cblas.h>
