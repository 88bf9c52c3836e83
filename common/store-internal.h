/*
 * store-internal.h — what store.c, store_schema.c and store_writer.c share. Not installed, not
 * included outside common/store*.c.
 */
#ifndef TP_STORE_INTERNAL_H
#define TP_STORE_INTERNAL_H

#include <stdbool.h>

#include <sqlite3.h>

/* Maps an SQLite result code (plain or extended) to a negative errno: SQLITE_BUSY -> -EBUSY,
 * SQLITE_CANTOPEN -> the OS error or -ENOENT, SQLITE_FULL -> -ENOSPC, and so on (-EIO when
 * nothing closer fits). `db` may be NULL; when given, its last OS errno refines I/O errors. */
int tp__store_errno(sqlite3 *db, int rc);

/* Formats "<call> <path>: <reason>" into a new string, the reason being db's last error
 * message (or sqlite3_errstr(rc) when db is NULL). */
char *tp__store_errorf(sqlite3 *db, int rc, const char *call, const char *path);

/* Opens a connection the way every store connection is opened: read-write (and create when
 * `create`), no SQLite mutex (one thread per connection), busy_timeout, WAL journal (checked),
 * synchronous=NORMAL, foreign_keys=ON. Does not migrate. Returns 0 and *out, or a negative
 * errno and a malloc'd message in *err; nothing is left open on failure. */
int tp__store_connect(const char *path, bool create, int busy_timeout_ms, sqlite3 **out, char **err);

/* sqlite3_exec(db, sql, cb, data), retried while it answers SQLITE_BUSY, for up to timeout_ms.
 * For the statements where SQLite reports a lock conflict at once instead of calling the busy
 * handler (it does so when waiting could deadlock). Returns the last SQLite result code. */
int tp__store_exec_retry(sqlite3 *db, const char *sql, int timeout_ms, int (*cb)(void *, int, char **, char **),
                         void *data);

/* Reads PRAGMA user_version. Returns 0 and *out, or an SQLite error code. */
int tp__store_user_version(sqlite3 *db, int *out);

/* Brings the schema to tp_store_schema_latest() inside BEGIN IMMEDIATE (store_schema.c),
 * waiting up to busy_timeout_ms for the write lock. Returns 0, -EPROTO for a database newer than this build, or another
 * negative errno; *err gets a malloc'd message on failure. */
int tp__store_migrate(sqlite3 *db, const char *path, int busy_timeout_ms, char **err);

#endif
