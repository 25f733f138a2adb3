/*
 * crashpoint — named places where a test build kills itself with SIGKILL,
 * so that the fault suite (tests/integration/test_faults.py) can prove that
 * a crash at the most dangerous moments loses nothing.
 *
 *     CRASH_POINT("ingest.flushed");
 *
 * In the shipped binary CRASH_POINT() is nothing: the points exist only in
 * code compiled with AINODE_CRASH_POINTS defined (the ainode-faults
 * executable of the test build, tests/CMakeLists.txt). There, a point kills
 * the process when the environment variable AINODE_CRASH_AT names it:
 *
 *     AINODE_CRASH_AT=send.accepted      the first time it is passed
 *     AINODE_CRASH_AT=send.accepted:3    the third time
 *
 * The kill is a real kill -9: no signal handler, no atexit, no buffer
 * flushed, exactly what a power-less crash of the process leaves behind.
 * Names are "stage.moment", lower case; docs/architecture.md lists them.
 */
#ifndef AINODE_COMMON_CRASHPOINT_H
#define AINODE_COMMON_CRASHPOINT_H

#ifdef AINODE_CRASH_POINTS
/* Kills the process when AINODE_CRASH_AT names NAME (and its count, if
 * any, is reached); returns otherwise. Thread-safe. */
void crashpoint_hit(const char *name);
#define CRASH_POINT(name) crashpoint_hit(name)
#else
/* No code; sizeof only keeps a variable used in NAME from being unused. */
#define CRASH_POINT(name) ((void)sizeof(name))
#endif

#endif
