/*
 * The sandbox protocol: frames between the host agent and the in-sandbox init.
 *
 * Transport: any ordered byte stream. The namespaces runtime and gVisor use the init's
 * fd 0 (agent -> init) and fd 1 (init -> agent); a microVM would use a virtio-serial port.
 *
 * Frame: u8 type | u32 id (little endian) | u32 length (little endian) | payload
 * `id` names a process or file transfer chosen by the agent (0 = the sandbox itself).
 * Mirrored in src/mags/runtime/protocol.py -- keep the two in step (PROTOCOL_VERSION).
 */
#ifndef MAGS_PROTOCOL_H
#define MAGS_PROTOCOL_H

#define PROTOCOL_VERSION "mags-init/1"
#define FRAME_HEADER 9
#define MAX_FRAME (8u * 1024u * 1024u)

/* agent -> init */
#define T_SPAWN 1       /* u32 flags, u16 rows, u16 cols, u32 argc, u32 envc, cwd\0 argv\0.. env\0.. */
#define T_STDIN 2       /* raw bytes */
#define T_STDIN_CLOSE 3 /* - */
#define T_SIGNAL 4      /* i32 signal, sent to the process group */
#define T_RESIZE 5      /* u16 rows, u16 cols */
#define T_KILL_ALL 6    /* kill every process but init */
#define T_PING 7        /* echoed back as PONG with the same payload */
#define T_FILE_OPEN 8   /* u32 mode, path\0 (parents created) */
#define T_FILE_DATA 9   /* raw bytes */
#define T_FILE_CLOSE 10 /* - ; answered by FILE_DONE */
#define T_SHUTDOWN 11   /* kill everything and exit */

/* init -> agent */
#define T_HELLO 64      /* version string */
#define T_STARTED 65    /* u32 pid (inside the sandbox) */
#define T_STDOUT 66
#define T_STDERR 67
#define T_EXIT 68       /* i32 exit_code, i32 signal (0 if exited normally) */
#define T_ERROR 69      /* i32 errno, message */
#define T_PONG 70
#define T_FILE_DONE 71  /* i32 errno (0 = ok) */
#define T_CLOSED 72     /* every output fd of the process reached EOF (after EXIT) */

#define SPAWN_PTY 1u
#define SPAWN_STDIN 2u

#endif
