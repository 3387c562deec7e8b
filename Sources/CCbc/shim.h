// The C API of COIN-OR CBC (Debian: coinor-libcbc-dev). Only PMQSolver/CbcBackend.swift imports it.
#include <coin/Cbc_C_Interface.h>
