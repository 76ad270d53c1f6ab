/*
 * What the parts of mags-sandbox share: the init (mags_sandbox.c), the launcher (launch.c)
 * and the hardening of the sandbox's processes (harden.c).
 */
#ifndef MAGS_SANDBOX_H
#define MAGS_SANDBOX_H

#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#include "protocol.h"

/* print "mags-sandbox: <message>[: <errno text>]" on stderr and exit 125 */
void die(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));

/* serve the sandbox protocol on fd 0/1 until shut down (never returns normally) */
int run_init(void);

/* `mags-sandbox launch ...` and `mags-sandbox cgexec ...` (launch.c) */
int run_launch(int argc, char **argv);
int run_cgexec(int argc, char **argv);
int run_probe_userns(int argc, char **argv);

/* harden.c: the capability set and seccomp filter of every sandbox process */
void drop_capabilities(void);
void install_seccomp(void);

#endif
