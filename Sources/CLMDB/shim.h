#ifndef BANKLINK_CLMDB_SHIM_H
#define BANKLINK_CLMDB_SHIM_H
#include <lmdb.h>
#endif
