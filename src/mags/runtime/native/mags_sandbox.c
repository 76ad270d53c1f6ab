/*
 * mags-sandbox: the namespaces sandbox launcher and the in-sandbox init.
 *
 *   mags-sandbox init                run the init daemon on fd 0/1 (inside gVisor or a VM)
 *   mags-sandbox launch [options]    namespaces runtime: build the sandbox, then become its init
 *   mags-sandbox cgexec --cgroup DIR... [--lower/--upper/--work/--root] [--mask DIR] -- CMD [ARGS]
 *                                    join cgroups, mount the overlay root and hide DIRs (empty
 *                                    read-only tmpfs) in a private mount namespace, exec CMD
 *   mags-sandbox version
 *
 * launch options:
 *   --cgroup DIR        join this cgroup (repeatable: one per v1 hierarchy, or the v2 dir)
 *   --netns PATH        join this network namespace (a bind-mounted nsfs file)
 *   --lower DIR         overlay lower layer, topmost first (repeatable)
 *   --upper DIR --work DIR   overlay upper and work dirs
 *   --root DIR          empty directory to mount the overlay root on
 *   --bind SRC:DST[:ro] bind mount a host path at DST inside the sandbox (repeatable)
 *   --tmpfs DST:SIZE    mount a tmpfs (SIZE like 64m) at DST inside the sandbox
 *   --hostname NAME
 *   --no-seccomp        debugging only
 *
 * Why our own code and not bubblewrap/crun: we need the sandbox's pid 1 to be our init (the
 * protocol endpoint), the overlay mounted inside the sandbox's own mount namespace (so no
 * mount ever leaks onto the host, even if the agent is killed), cgroup v1 and v2, and a start
 * in a few milliseconds.  See docs/ARCHITECTURE.md.
 *
 * Built static (gcc -static) so the same binary runs inside any guest image.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/audit.h>
#include <linux/capability.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
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

extern char **environ;

static void die(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));
static void die(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "mags-sandbox: ");
    vfprintf(stderr, fmt, ap);
    if (errno) fprintf(stderr, ": %s", strerror(errno));
    fprintf(stderr, "\n");
    va_end(ap);
    _exit(125);
}

/* ------------------------------------------------------------------ byte buffers */

typedef struct {
    char *data;
    size_t len, cap, off;
} buf_t;

static void buf_reserve(buf_t *b, size_t extra) {
    if (b->off > 0 && b->off == b->len) b->off = b->len = 0;
    if (b->len + extra <= b->cap) return;
    if (b->off > 0) {
        memmove(b->data, b->data + b->off, b->len - b->off);
        b->len -= b->off;
        b->off = 0;
        if (b->len + extra <= b->cap) return;
    }
    size_t cap = b->cap ? b->cap : 65536;
    while (cap < b->len + extra) cap *= 2;
    char *d = realloc(b->data, cap);
    if (!d) { errno = ENOMEM; die("out of memory"); }
    b->data = d;
    b->cap = cap;
}

static size_t buf_pending(const buf_t *b) { return b->len - b->off; }

static void put_u32(char *p, uint32_t v) { memcpy(p, &v, 4); }
static uint32_t get_u32(const char *p) { uint32_t v; memcpy(&v, p, 4); return v; }

/* ------------------------------------------------------------------ init state */

#define MAX_PROCS 1024

typedef struct {
    int used;
    uint32_t id;
    pid_t pid;
    int out_fd, err_fd, in_fd; /* pty: out_fd is the master, err_fd = -1, in_fd = master dup */
    int pty;
    int exited, exit_sent;
    int status;
} proc_t;

typedef struct {
    int used;
    uint32_t id;
    int fd;
    int err;
} xfer_t;

static proc_t procs[MAX_PROCS];
static xfer_t xfers[64];
static buf_t outq, inq;
static int ctl_in = 0, ctl_out = 1;
static int sig_fd = -1;
static int shutting_down = 0;
#define OUTQ_HIGH (4u * 1024u * 1024u)

static void send_frame(uint8_t type, uint32_t id, const void *payload, uint32_t len) {
    buf_reserve(&outq, FRAME_HEADER + len);
    char *p = outq.data + outq.len;
    p[0] = (char)type;
    put_u32(p + 1, id);
    put_u32(p + 5, len);
    if (len) memcpy(p + FRAME_HEADER, payload, len);
    outq.len += FRAME_HEADER + len;
}

static void send_i32s(uint8_t type, uint32_t id, int32_t a, int32_t b, int n) {
    char p[8];
    memcpy(p, &a, 4);
    memcpy(p + 4, &b, 4);
    send_frame(type, id, p, (uint32_t)(4 * n));
}

static void send_error(uint32_t id, int err, const char *msg) {
    char p[512];
    int32_t e = err;
    memcpy(p, &e, 4);
    int n = snprintf(p + 4, sizeof(p) - 4, "%s: %s", msg, strerror(err));
    if (n < 0) n = 0;
    if (n > (int)sizeof(p) - 5) n = (int)sizeof(p) - 5;
    send_frame(T_ERROR, id, p, (uint32_t)(4 + n));
}

static void flush_out(int blocking) {
    while (buf_pending(&outq) > 0) {
        ssize_t n = write(ctl_out, outq.data + outq.off, buf_pending(&outq));
        if (n > 0) { outq.off += (size_t)n; continue; }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && errno == EAGAIN) {
            if (!blocking) return;
            struct pollfd p = {ctl_out, POLLOUT, 0};
            poll(&p, 1, 1000);
            continue;
        }
        /* the agent is gone: nothing left to serve */
        kill(-1, SIGKILL);
        _exit(0);
    }
}

static proc_t *proc_by_id(uint32_t id) {
    for (int i = 0; i < MAX_PROCS; i++)
        if (procs[i].used && procs[i].id == id) return &procs[i];
    return NULL;
}

static void close_fd(int *fd) {
    if (*fd >= 0) close(*fd);
    *fd = -1;
}

/* read what is available on one output fd; returns 0 on EOF/error, 1 otherwise */
static int pump_fd(proc_t *p, int *fd, uint8_t type) {
    static char rb[65536];
    for (int rounds = 0; rounds < 16; rounds++) {
        ssize_t n = read(*fd, rb, sizeof(rb));
        if (n > 0) {
            send_frame(type, p->id, rb, (uint32_t)n);
            if ((size_t)n < sizeof(rb)) return 1;
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EINTR)) return 1;
        /* EOF, or EIO on a pty master once the last slave closed */
        if (p->pty && *fd == p->in_fd) p->in_fd = -1;
        close_fd(fd);
        return 0;
    }
    return 1;
}

static void maybe_finish(proc_t *p) {
    if (p->exited && !p->exit_sent) {
        /* the process is gone: everything it wrote is in its pipes already, drain it */
        if (p->out_fd >= 0) pump_fd(p, &p->out_fd, T_STDOUT);
        if (p->err_fd >= 0) pump_fd(p, &p->err_fd, T_STDERR);
        int32_t code = 0, sig = 0;
        if (WIFEXITED(p->status)) code = WEXITSTATUS(p->status);
        else if (WIFSIGNALED(p->status)) { sig = WTERMSIG(p->status); code = 128 + sig; }
        send_i32s(T_EXIT, p->id, code, sig, 2);
        p->exit_sent = 1;
        if (p->pty) { close_fd(&p->out_fd); p->in_fd = -1; }
    }
    if (p->exit_sent && p->out_fd < 0 && p->err_fd < 0) {
        if (p->in_fd >= 0 && !p->pty) close_fd(&p->in_fd);
        send_frame(T_CLOSED, p->id, NULL, 0);
        p->used = 0;
    }
}

static void reap(void) {
    for (;;) {
        int status;
        pid_t pid = waitpid(-1, &status, WNOHANG);
        if (pid <= 0) return;
        for (int i = 0; i < MAX_PROCS; i++) {
            if (procs[i].used && procs[i].pid == pid && !procs[i].exited) {
                procs[i].exited = 1;
                procs[i].status = status;
                maybe_finish(&procs[i]);
            }
        }
    }
}

static void set_nonblock(int fd) { fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK); }

static int open_pty(int *master, int *slave, uint16_t rows, uint16_t cols) {
    int m = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
    if (m < 0) return -1;
    if (unlockpt(m) < 0) { close(m); return -1; }
    char name[128];
    if (ptsname_r(m, name, sizeof(name)) != 0) { close(m); return -1; }
    int s = open(name, O_RDWR | O_NOCTTY | O_CLOEXEC);
    if (s < 0) { close(m); return -1; }
    struct winsize ws = {.ws_row = rows ? rows : 24, .ws_col = cols ? cols : 80};
    ioctl(m, TIOCSWINSZ, &ws);
    *master = m;
    *slave = s;
    return 0;
}

static void do_spawn(uint32_t id, const char *pl, uint32_t len) {
    if (len < 16) { send_error(id, EINVAL, "spawn: short payload"); send_i32s(T_EXIT, id, 127, 0, 2); send_frame(T_CLOSED, id, NULL, 0); return; }
    uint32_t flags = get_u32(pl);
    uint16_t rows, cols;
    memcpy(&rows, pl + 4, 2);
    memcpy(&cols, pl + 6, 2);
    uint32_t argc = get_u32(pl + 8), envc = get_u32(pl + 12);
    if (argc == 0 || argc > 65536 || envc > 65536) { send_error(id, EINVAL, "spawn: bad argc/envc"); send_i32s(T_EXIT, id, 127, 0, 2); send_frame(T_CLOSED, id, NULL, 0); return; }
    char **strs = calloc(1 + argc + 1 + envc + 1, sizeof(char *));
    const char *p = pl + 16, *end = pl + len;
    uint32_t need = 1 + argc + envc;
    for (uint32_t i = 0; i < need; i++) {
        const char *z = memchr(p, 0, (size_t)(end - p));
        if (!z) { free(strs); send_error(id, EINVAL, "spawn: truncated strings"); send_i32s(T_EXIT, id, 127, 0, 2); send_frame(T_CLOSED, id, NULL, 0); return; }
        strs[i < 1 + argc ? i : i + 1] = (char *)p;
        p = z + 1;
    }
    const char *cwd = strs[0];
    char **argv = strs + 1;
    char **envp = strs + 1 + argc + 1;

    proc_t *slot = NULL;
    for (int i = 0; i < MAX_PROCS; i++) if (!procs[i].used) { slot = &procs[i]; break; }
    if (!slot) { free(strs); send_error(id, EAGAIN, "spawn: too many processes"); send_i32s(T_EXIT, id, 127, 0, 2); send_frame(T_CLOSED, id, NULL, 0); return; }

    int out[2] = {-1, -1}, err[2] = {-1, -1}, in[2] = {-1, -1}, master = -1, slave = -1;
    int pty = (flags & SPAWN_PTY) != 0;
    int ok = 0;
    if (pty) {
        if (open_pty(&master, &slave, rows, cols) < 0) goto fail;
    } else {
        if (pipe2(out, O_CLOEXEC) < 0 || pipe2(err, O_CLOEXEC) < 0) goto fail;
        if ((flags & SPAWN_STDIN) && pipe2(in, O_CLOEXEC) < 0) goto fail;
    }
    ok = 1;
fail:
    if (!ok) {
        int e = errno;
        free(strs);
        send_error(id, e, "spawn: cannot create pipes");
        send_i32s(T_EXIT, id, 127, 0, 2);
        send_frame(T_CLOSED, id, NULL, 0);
        return;
    }
    /* vfork: the child borrows init's memory until it execs, so no copy of init's address
       space is made (under gVisor that is a whole new address space per spawn).  The child
       only makes syscalls, writes child_errno (read by init once the child exec'd or died)
       and sets `environ`, which init restores: init is suspended until then. */
    volatile int child_errno = 0;
    char **saved_environ = environ;
    pid_t pid = vfork();
    if (pid == 0) {
        sigset_t all;
        sigemptyset(&all);
        sigprocmask(SIG_SETMASK, &all, NULL);
        for (int s = 1; s < NSIG; s++) signal(s, SIG_DFL);
        setsid();
        if (pty) {
            ioctl(slave, TIOCSCTTY, 0);
            dup2(slave, 0); dup2(slave, 1); dup2(slave, 2);
        } else {
            int nul = -1;
            if (in[0] >= 0) dup2(in[0], 0);
            else { nul = open("/dev/null", O_RDONLY); if (nul >= 0) dup2(nul, 0); }
            dup2(out[1], 1);
            dup2(err[1], 2);
        }
        int fd = open("/proc/self/oom_score_adj", O_WRONLY);
        if (fd >= 0) { (void)!write(fd, "0", 1); close(fd); }
        if (chdir(cwd) < 0) (void)!chdir("/");
        environ = envp;
        execvp(argv[0], argv);
        child_errno = errno ? errno : ENOEXEC;
        _exit(127);
    }
    int fork_errno = errno;
    environ = saved_environ;
    if (pty) close(slave);
    close_fd(&out[1]);
    close_fd(&err[1]);
    close_fd(&in[0]);
    if (pid < 0) {
        close_fd(&out[0]); close_fd(&err[0]); close_fd(&in[1]);
        if (master >= 0) close(master);
        free(strs);
        send_error(id, fork_errno, "spawn: fork");
        send_i32s(T_EXIT, id, 127, 0, 2);
        send_frame(T_CLOSED, id, NULL, 0);
        return;
    }
    if (child_errno != 0) {
        char msg[300];
        snprintf(msg, sizeof(msg), "cannot execute %.200s", argv[0]);
        send_error(id, child_errno, msg);
    }
    free(strs);

    memset(slot, 0, sizeof(*slot));
    slot->used = 1;
    slot->id = id;
    slot->pid = pid;
    slot->pty = pty;
    if (pty) {
        slot->out_fd = master;
        slot->err_fd = -1;
        slot->in_fd = master;
    } else {
        slot->out_fd = out[0];
        slot->err_fd = err[0];
        slot->in_fd = in[1];
    }
    set_nonblock(slot->out_fd);
    if (slot->err_fd >= 0) set_nonblock(slot->err_fd);
    uint32_t upid = (uint32_t)pid;
    send_frame(T_STARTED, id, &upid, 4);
}

static int mkdir_parents(const char *path) {
    char tmp[4096];
    size_t len = strlen(path);
    if (len >= sizeof(tmp)) { errno = ENAMETOOLONG; return -1; }
    memcpy(tmp, path, len + 1);
    for (char *p = tmp + 1; *p; p++) {
        if (*p == '/') {
            *p = 0;
            if (mkdir(tmp, 0755) < 0 && errno != EEXIST) return -1;
            *p = '/';
        }
    }
    return 0;
}

static xfer_t *xfer_by_id(uint32_t id) {
    for (size_t i = 0; i < sizeof(xfers) / sizeof(xfers[0]); i++)
        if (xfers[i].used && xfers[i].id == id) return &xfers[i];
    return NULL;
}

static void do_file_open(uint32_t id, const char *pl, uint32_t len) {
    xfer_t *x = NULL;
    for (size_t i = 0; i < sizeof(xfers) / sizeof(xfers[0]); i++) if (!xfers[i].used) { x = &xfers[i]; break; }
    if (!x) { int32_t e = EMFILE; send_frame(T_FILE_DONE, id, &e, 4); return; }
    memset(x, 0, sizeof(*x));
    x->used = 1;
    x->id = id;
    x->fd = -1;
    if (len < 5 || pl[len - 1] != 0) { x->err = EINVAL; return; }
    uint32_t mode = get_u32(pl);
    const char *path = pl + 4;
    if (path[0] != '/') { x->err = EINVAL; return; }
    if (mkdir_parents(path) < 0) { x->err = errno; return; }
    x->fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode & 07777);
    if (x->fd < 0) x->err = errno;
    else fchmod(x->fd, mode & 07777);
}

static void do_file_data(uint32_t id, const char *pl, uint32_t len) {
    xfer_t *x = xfer_by_id(id);
    if (!x || x->fd < 0 || x->err) return;
    while (len > 0) {
        ssize_t n = write(x->fd, pl, len);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) { x->err = errno; return; }
        pl += n;
        len -= (uint32_t)n;
    }
}

static void do_file_close(uint32_t id) {
    xfer_t *x = xfer_by_id(id);
    int32_t e = EBADF;
    if (x) {
        e = x->err;
        if (x->fd >= 0 && close(x->fd) < 0 && !e) e = errno;
        x->used = 0;
    }
    send_frame(T_FILE_DONE, id, &e, 4);
}

static void kill_all(void) { kill(-1, SIGKILL); }

static void shutdown_now(void) {
    kill_all();
    /* give the kernel a moment to deliver, then report and leave: pid 1 exiting tears the
       namespace down and the kernel kills anything left */
    for (int i = 0; i < 100; i++) {
        int status;
        pid_t pid = waitpid(-1, &status, WNOHANG);
        if (pid < 0 && errno == ECHILD) break;
        if (pid == 0) usleep(1000);
    }
    flush_out(1);
    _exit(0);
}

static void handle_frame(uint8_t type, uint32_t id, const char *pl, uint32_t len) {
    proc_t *p;
    switch (type) {
    case T_SPAWN: do_spawn(id, pl, len); break;
    case T_STDIN:
        p = proc_by_id(id);
        if (p && p->in_fd >= 0) {
            /* stdin writes block briefly: a process that never reads its stdin must not
               wedge init, so give up on it after the pipe stays full for a while */
            const char *d = pl;
            uint32_t left = len;
            while (left > 0) {
                ssize_t n = write(p->in_fd, d, left);
                if (n > 0) { d += n; left -= (uint32_t)n; continue; }
                if (n < 0 && errno == EINTR) continue;
                if (n < 0 && errno == EAGAIN) {
                    struct pollfd pf = {p->in_fd, POLLOUT, 0};
                    if (poll(&pf, 1, 5000) > 0) continue;
                }
                break;
            }
        }
        break;
    case T_STDIN_CLOSE:
        p = proc_by_id(id);
        if (p && p->in_fd >= 0) {
            if (p->pty) { char eot = 4; (void)!write(p->in_fd, &eot, 1); }
            else close_fd(&p->in_fd);
        }
        break;
    case T_SIGNAL:
        p = proc_by_id(id);
        if (p && len >= 4 && !p->exited) {
            int32_t s;
            memcpy(&s, pl, 4);
            if (kill(-p->pid, s) < 0) kill(p->pid, s);
        }
        break;
    case T_RESIZE:
        p = proc_by_id(id);
        if (p && p->pty && p->out_fd >= 0 && len >= 4) {
            struct winsize ws = {0};
            memcpy(&ws.ws_row, pl, 2);
            memcpy(&ws.ws_col, pl + 2, 2);
            ioctl(p->out_fd, TIOCSWINSZ, &ws);
        }
        break;
    case T_KILL_ALL: kill_all(); break;
    case T_PING: send_frame(T_PONG, id, pl, len); break;
    case T_FILE_OPEN: do_file_open(id, pl, len); break;
    case T_FILE_DATA: do_file_data(id, pl, len); break;
    case T_FILE_CLOSE: do_file_close(id); break;
    case T_SHUTDOWN: shutting_down = 1; break;
    default: send_error(id, EINVAL, "unknown frame type"); break;
    }
}

static void read_ctl(void) {
    for (;;) {
        buf_reserve(&inq, 65536);
        ssize_t n = read(ctl_in, inq.data + inq.len, inq.cap - inq.len);
        if (n > 0) { inq.len += (size_t)n; continue; }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && errno == EAGAIN) break;
        /* EOF: the agent closed our control stream */
        shutting_down = 1;
        break;
    }
    while (buf_pending(&inq) >= FRAME_HEADER) {
        const char *h = inq.data + inq.off;
        uint32_t len = get_u32(h + 5);
        if (len > MAX_FRAME) { shutting_down = 1; return; }
        if (buf_pending(&inq) < FRAME_HEADER + len) {
            buf_reserve(&inq, FRAME_HEADER + len);
            break;
        }
        uint8_t type = (uint8_t)h[0];
        uint32_t id = get_u32(h + 1);
        inq.off += FRAME_HEADER + len;
        handle_frame(type, id, h + FRAME_HEADER, len);
        if (shutting_down) return;
    }
}

static int run_init(void) {
    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGCHLD);
    sigaddset(&mask, SIGTERM);
    sigaddset(&mask, SIGINT);
    sigaddset(&mask, SIGHUP);
    sigaddset(&mask, SIGPIPE);
    sigprocmask(SIG_BLOCK, &mask, NULL);
    sig_fd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
    if (sig_fd < 0) die("signalfd");
    set_nonblock(ctl_in);
    set_nonblock(ctl_out);
    fcntl(ctl_in, F_SETFD, FD_CLOEXEC);
    fcntl(ctl_out, F_SETFD, FD_CLOEXEC);
    send_frame(T_HELLO, 0, PROTOCOL_VERSION, (uint32_t)strlen(PROTOCOL_VERSION));
    flush_out(1);

    struct pollfd *pfds = calloc(3 + 2 * MAX_PROCS, sizeof(struct pollfd));
    proc_t **owner = calloc(3 + 2 * MAX_PROCS, sizeof(proc_t *));
    for (;;) {
        if (shutting_down) shutdown_now();
        int n = 0;
        pfds[n++] = (struct pollfd){ctl_in, POLLIN, 0};
        pfds[n++] = (struct pollfd){sig_fd, POLLIN, 0};
        pfds[n++] = (struct pollfd){ctl_out, (short)(buf_pending(&outq) ? POLLOUT : 0), 0};
        int room = buf_pending(&outq) < OUTQ_HIGH;
        for (int i = 0; i < MAX_PROCS && room; i++) {
            if (!procs[i].used) continue;
            if (procs[i].out_fd >= 0) { owner[n] = &procs[i]; pfds[n++] = (struct pollfd){procs[i].out_fd, POLLIN, 0}; }
            if (procs[i].err_fd >= 0) { owner[n] = &procs[i]; pfds[n++] = (struct pollfd){procs[i].err_fd, POLLIN, 0}; }
        }
        int r = poll(pfds, (nfds_t)n, -1);
        if (r < 0) { if (errno == EINTR) continue; die("poll"); }
        for (int i = 3; i < n; i++) {
            if (!pfds[i].revents) continue;
            proc_t *p = owner[i];
            if (!p->used) continue;
            if (pfds[i].fd == p->out_fd) pump_fd(p, &p->out_fd, T_STDOUT);
            else if (pfds[i].fd == p->err_fd) pump_fd(p, &p->err_fd, T_STDERR);
            maybe_finish(p);
        }
        if (pfds[1].revents) {
            struct signalfd_siginfo si;
            while (read(sig_fd, &si, sizeof(si)) == sizeof(si)) {
                if (si.ssi_signo == SIGTERM || si.ssi_signo == SIGINT || si.ssi_signo == SIGHUP)
                    shutting_down = 1;
            }
            reap();
        }
        if (pfds[0].revents) read_ctl();
        flush_out(0);
    }
}

/* ------------------------------------------------------------------ sandbox setup */

/* Open DIR (relative to the directory fd `at`) without following any symlink, creating
   missing directories.  A guest-controlled root must never redirect our mounts. */
static int open_dir_nofollow(int at, const char *rel, int create) {
    char tmp[4096];
    snprintf(tmp, sizeof(tmp), "%s", rel);
    int fd = dup(at);
    char *save = NULL;
    for (char *c = strtok_r(tmp, "/", &save); c; c = strtok_r(NULL, "/", &save)) {
        if (strcmp(c, "..") == 0 || strcmp(c, ".") == 0) { close(fd); errno = EINVAL; return -1; }
        int nfd = openat(fd, c, O_PATH | O_NOFOLLOW | O_DIRECTORY | O_CLOEXEC);
        if (nfd < 0 && errno == ENOENT && create) {
            if (mkdirat(fd, c, 0755) < 0 && errno != EEXIST) { int e = errno; close(fd); errno = e; return -1; }
            nfd = openat(fd, c, O_PATH | O_NOFOLLOW | O_DIRECTORY | O_CLOEXEC);
        }
        int e = errno;
        close(fd);
        if (nfd < 0) { errno = e; return -1; }
        fd = nfd;
    }
    return fd;
}

/* Open (creating if missing) the mount target `dst` inside root: a directory or an empty
   file, never through a symlink.  Returns an O_PATH fd. */
static int open_target(int rootfd, const char *dst, int want_dir) {
    if (want_dir) return open_dir_nofollow(rootfd, dst, 1);
    char parent[4096];
    snprintf(parent, sizeof(parent), "%s", dst);
    char *slash = strrchr(parent, '/');
    const char *base = dst;
    int pfd;
    if (slash) {
        *slash = 0;
        base = slash + 1;
        pfd = open_dir_nofollow(rootfd, parent, 1);
    } else {
        pfd = dup(rootfd);
    }
    if (pfd < 0) return -1;
    int fd = openat(pfd, base, O_PATH | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0 && errno == ENOENT) {
        int c = openat(pfd, base, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
        if (c >= 0) close(c);
        fd = openat(pfd, base, O_PATH | O_NOFOLLOW | O_CLOEXEC);
    }
    int e = errno;
    close(pfd);
    if (fd >= 0) {
        struct stat st;
        if (fstat(fd, &st) < 0 || S_ISLNK(st.st_mode) || S_ISDIR(st.st_mode)) { close(fd); errno = ELOOP; return -1; }
    }
    errno = e;
    return fd;
}

static void mount_at(int rootfd, const char *src, const char *dst, const char *fstype, unsigned long flags,
                     const char *data, int want_dir) {
    const char *rel = dst[0] == '/' ? dst + 1 : dst;
    int fd = open_target(rootfd, rel, want_dir);
    if (fd < 0) die("cannot open mount target %s", dst);
    char proc_path[64];
    snprintf(proc_path, sizeof(proc_path), "/proc/self/fd/%d", fd);
    if (mount(src, proc_path, fstype, flags, data) < 0) die("mount %s on %s", src ? src : fstype, dst);
    close(fd);
    if ((flags & MS_BIND) && (flags & MS_RDONLY)) {
        /* the old fd still names what lies under the new mount: reopen to reach the mount */
        fd = open_target(rootfd, rel, want_dir);
        if (fd < 0) die("cannot reopen mount target %s", dst);
        snprintf(proc_path, sizeof(proc_path), "/proc/self/fd/%d", fd);
        if (mount(NULL, proc_path, NULL, MS_BIND | MS_REMOUNT | MS_RDONLY | (flags & (MS_NOSUID | MS_NODEV | MS_NOEXEC)), NULL) < 0)
            die("remount read-only %s", dst);
        close(fd);
    }
}

static void write_file(const char *path, const char *val) {
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0) die("open %s", path);
    if (write(fd, val, strlen(val)) < 0) die("write %s", path);
    close(fd);
}

/* Capabilities a sandbox keeps: Docker's default set without MKNOD. */
static const int keep_caps[] = {
    CAP_CHOWN, CAP_DAC_OVERRIDE, CAP_FSETID, CAP_FOWNER, CAP_NET_RAW, CAP_SETGID, CAP_SETUID,
    CAP_SETFCAP, CAP_SETPCAP, CAP_NET_BIND_SERVICE, CAP_SYS_CHROOT, CAP_KILL, CAP_AUDIT_WRITE,
};

static void drop_capabilities(void) {
    uint64_t keep = 0;
    for (size_t i = 0; i < sizeof(keep_caps) / sizeof(keep_caps[0]); i++) keep |= 1ull << keep_caps[i];
    for (int c = 0; c <= 63; c++) {
        if (keep & (1ull << c)) continue;
        if (prctl(PR_CAPBSET_DROP, c, 0, 0, 0) < 0 && errno != EINVAL) die("drop capability %d", c);
    }
    prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0);
    struct __user_cap_header_struct h = {_LINUX_CAPABILITY_VERSION_3, 0};
    struct __user_cap_data_struct d[2];
    memset(d, 0, sizeof(d));
    d[0].effective = d[0].permitted = d[0].inheritable = (uint32_t)keep;
    d[1].effective = d[1].permitted = d[1].inheritable = (uint32_t)(keep >> 32);
    if (syscall(SYS_capset, &h, d) < 0) die("capset");
}

/* A deny-list seccomp filter: what container runtimes block for root-in-container. */
#define DENY(nr) BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (nr), 0, 1), BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM)
#define CLONE_NS_FLAGS (CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWCGROUP)

static void install_seccomp(void) {
#if defined(__x86_64__)
    struct sock_filter f[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        /* the x32 ABI aliases every syscall: refuse it wholesale */
        BPF_JUMP(BPF_JMP | BPF_JGE | BPF_K, 0x40000000, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM),
        /* clone3 hides its flags in memory we cannot inspect: make libc fall back to clone */
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_clone3, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | ENOSYS),
        /* clone with namespace flags */
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_clone, 0, 4),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, args[0])),
        BPF_JUMP(BPF_JMP | BPF_JSET | BPF_K, CLONE_NS_FLAGS, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        DENY(__NR_mount), DENY(__NR_umount2), DENY(__NR_pivot_root), DENY(__NR_swapon), DENY(__NR_swapoff),
        DENY(__NR_reboot), DENY(__NR_kexec_load), DENY(__NR_kexec_file_load), DENY(__NR_init_module),
        DENY(__NR_finit_module), DENY(__NR_delete_module), DENY(__NR_create_module), DENY(__NR_acct),
        DENY(__NR_settimeofday), DENY(__NR_clock_settime), DENY(__NR_clock_adjtime), DENY(__NR_adjtimex),
        DENY(__NR_iopl), DENY(__NR_ioperm), DENY(__NR_quotactl), DENY(__NR_nfsservctl),
        DENY(__NR_lookup_dcookie), DENY(__NR_perf_event_open), DENY(__NR_bpf), DENY(__NR_keyctl),
        DENY(__NR_add_key), DENY(__NR_request_key), DENY(__NR_open_by_handle_at),
        DENY(__NR_name_to_handle_at), DENY(__NR_setns), DENY(__NR_unshare), DENY(__NR_syslog),
        DENY(__NR_vhangup), DENY(__NR_uselib), DENY(__NR_sysfs), DENY(__NR__sysctl),
        DENY(__NR_get_kernel_syms), DENY(__NR_query_module), DENY(__NR_userfaultfd),
        DENY(__NR_fsopen), DENY(__NR_fsconfig), DENY(__NR_fsmount), DENY(__NR_fspick),
        DENY(__NR_move_mount), DENY(__NR_open_tree), DENY(__NR_mount_setattr),
        DENY(__NR_process_madvise), DENY(__NR_kcmp), DENY(__NR_mbind), DENY(__NR_set_mempolicy),
        DENY(__NR_move_pages), DENY(__NR_migrate_pages),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    struct sock_fprog prog = {(unsigned short)(sizeof(f) / sizeof(f[0])), f};
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0) die("no_new_privs");
    if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog) < 0) die("seccomp");
#else
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0) die("no_new_privs");
    fprintf(stderr, "mags-sandbox: no seccomp filter for this architecture\n");
#endif
}

#define MAX_ITEMS 64
struct launch_opts {
    const char *cgroups[16];
    int ncgroups;
    const char *netns;
    const char *lowers[MAX_ITEMS];
    int nlowers;
    const char *upper, *work, *root, *hostname;
    const char *binds[MAX_ITEMS];
    int nbinds;
    const char *tmpfs[MAX_ITEMS];
    int ntmpfs;
    int seccomp;
};

static void join_cgroups(const char **dirs, int n) {
    char pid[32], path[4096];
    snprintf(pid, sizeof(pid), "%d", getpid());
    for (int i = 0; i < n; i++) {
        snprintf(path, sizeof(path), "%s/cgroup.procs", dirs[i]);
        write_file(path, pid);
    }
}

static volatile pid_t child_pid = 0;
static void forward_kill(int sig) {
    (void)sig;
    if (child_pid > 0) kill(child_pid, SIGKILL);
}

static void setup_dev(int rootfd) {
    mount_at(rootfd, "tmpfs", "/dev", "tmpfs", MS_NOSUID | MS_NOEXEC, "mode=755,size=65536k", 1);
    static const char *devs[] = {"null", "zero", "full", "random", "urandom", "tty"};
    char src[64], dst[64];
    for (size_t i = 0; i < sizeof(devs) / sizeof(devs[0]); i++) {
        snprintf(src, sizeof(src), "/dev/%s", devs[i]);
        snprintf(dst, sizeof(dst), "/dev/%s", devs[i]);
        mount_at(rootfd, src, dst, NULL, MS_BIND, NULL, 0);
    }
    mount_at(rootfd, "devpts", "/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620,gid=5", 1);
    mount_at(rootfd, "shm", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=1777,size=65536k", 1);
    int dfd = openat(rootfd, "dev", O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (dfd < 0) die("open /dev");
    symlinkat("pts/ptmx", dfd, "ptmx");
    symlinkat("/proc/self/fd", dfd, "fd");
    symlinkat("/proc/self/fd/0", dfd, "stdin");
    symlinkat("/proc/self/fd/1", dfd, "stdout");
    symlinkat("/proc/self/fd/2", dfd, "stderr");
    close(dfd);
}

static void setup_proc(int rootfd) {
    mount_at(rootfd, "proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL, 1);
    /* what runc masks or makes read-only: knobs that reach the host kernel */
    static const char *ro[] = {"/proc/sys", "/proc/sysrq-trigger", "/proc/irq", "/proc/bus", "/proc/fs"};
    static const char *masked[] = {"/proc/kcore", "/proc/keys", "/proc/timer_list", "/proc/sched_debug",
                                   "/proc/kallsyms", "/proc/latency_stats"};
    char path[256];
    for (size_t i = 0; i < sizeof(ro) / sizeof(ro[0]); i++) {
        snprintf(path, sizeof(path), "%s", ro[i] + 1);
        int fd = openat(rootfd, path, O_PATH | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0) continue;
        char pp[64];
        snprintf(pp, sizeof(pp), "/proc/self/fd/%d", fd);
        if (mount(pp, pp, NULL, MS_BIND | MS_REC, NULL) < 0) die("bind %s", ro[i]);
        close(fd);
        fd = openat(rootfd, path, O_PATH | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0) die("reopen %s", ro[i]);
        snprintf(pp, sizeof(pp), "/proc/self/fd/%d", fd);
        if (mount(NULL, pp, NULL, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) < 0)
            die("remount read-only %s", ro[i]);
        close(fd);
    }
    for (size_t i = 0; i < sizeof(masked) / sizeof(masked[0]); i++) {
        snprintf(path, sizeof(path), "%s", masked[i] + 1);
        int fd = openat(rootfd, path, O_PATH | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0) continue;
        char pp[64];
        snprintf(pp, sizeof(pp), "/proc/self/fd/%d", fd);
        mount("/dev/null", pp, NULL, MS_BIND, NULL);
        close(fd);
    }
    int fd = openat(rootfd, "proc/acpi", O_PATH | O_NOFOLLOW | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        char pp[64];
        snprintf(pp, sizeof(pp), "/proc/self/fd/%d", fd);
        mount("tmpfs", pp, "tmpfs", MS_RDONLY, "size=0");
        close(fd);
    }
}

static int run_launch(struct launch_opts *o) {
    if (!o->root || !o->upper || !o->work || o->nlowers == 0) {
        errno = 0;
        die("launch needs --root, --upper, --work and at least one --lower");
    }
    join_cgroups(o->cgroups, o->ncgroups);
    if (o->netns) {
        int nfd = open(o->netns, O_RDONLY | O_CLOEXEC);
        if (nfd < 0) die("open netns %s", o->netns);
        if (setns(nfd, CLONE_NEWNET) < 0) die("setns net");
        close(nfd);
    }
    if (unshare(CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWPID | CLONE_NEWCGROUP) < 0) die("unshare");

    pid_t pid = fork();
    if (pid < 0) die("fork");
    if (pid > 0) {
        /* the launcher stays as a tiny reaper the agent can wait on and kill */
        child_pid = pid;
        int nul = open("/dev/null", O_RDWR);
        dup2(nul, 0);
        dup2(nul, 1);
        if (nul > 2) close(nul);
        signal(SIGTERM, forward_kill);
        signal(SIGINT, forward_kill);
        signal(SIGHUP, forward_kill);
        prctl(PR_SET_PDEATHSIG, SIGTERM);
        if (getppid() == 1) forward_kill(0);
        int status;
        while (waitpid(pid, &status, 0) < 0) {
            if (errno != EINTR) return 125;
        }
        if (WIFEXITED(status)) return WEXITSTATUS(status);
        return 128 + WTERMSIG(status);
    }

    /* pid 1 of the sandbox */
    if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0) die("make / private");
    char opts[8192];
    size_t off = (size_t)snprintf(opts, sizeof(opts), "lowerdir=");
    for (int i = 0; i < o->nlowers; i++)
        off += (size_t)snprintf(opts + off, sizeof(opts) - off, "%s%s", i ? ":" : "", o->lowers[i]);
    snprintf(opts + off, sizeof(opts) - off, ",upperdir=%s,workdir=%s", o->upper, o->work);
    if (mount("overlay", o->root, "overlay", MS_NODEV, opts) < 0) die("mount overlay root (%s)", opts);
    int rootfd = open(o->root, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (rootfd < 0) die("open root");

    setup_proc(rootfd);
    setup_dev(rootfd);
    {
        int sfd = open_dir_nofollow(rootfd, "sys", 1);
        if (sfd >= 0) {
            char pp[64];
            snprintf(pp, sizeof(pp), "/proc/self/fd/%d", sfd);
            if (mount("sysfs", pp, "sysfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) < 0)
                fprintf(stderr, "mags-sandbox: sysfs not mounted: %s\n", strerror(errno));
            close(sfd);
        }
    }
    for (int i = 0; i < o->ntmpfs; i++) {
        char spec[4096];
        snprintf(spec, sizeof(spec), "%s", o->tmpfs[i]);
        char *colon = strrchr(spec, ':');
        char data[128] = "mode=1777";
        if (colon) { *colon = 0; snprintf(data, sizeof(data), "mode=1777,size=%s", colon + 1); }
        mount_at(rootfd, "tmpfs", spec, "tmpfs", MS_NOSUID | MS_NODEV, data, 1);
    }
    for (int i = 0; i < o->nbinds; i++) {
        char spec[4096];
        snprintf(spec, sizeof(spec), "%s", o->binds[i]);
        int ro = 0;
        size_t l = strlen(spec);
        if (l > 3 && strcmp(spec + l - 3, ":ro") == 0) { ro = 1; spec[l - 3] = 0; }
        char *colon = strchr(spec, ':');
        if (!colon) { errno = EINVAL; die("bad --bind %s", o->binds[i]); }
        *colon = 0;
        struct stat st;
        if (stat(spec, &st) < 0) die("bind source %s", spec);
        mount_at(rootfd, spec, colon + 1, NULL, MS_BIND | MS_REC | MS_NOSUID | MS_NODEV | (ro ? MS_RDONLY : 0), NULL,
                 S_ISDIR(st.st_mode));
    }

    if (fchdir(rootfd) < 0) die("chdir root");
    if (syscall(SYS_pivot_root, ".", ".") < 0) die("pivot_root");
    if (umount2(".", MNT_DETACH) < 0) die("detach old root");
    if (chdir("/") < 0) die("chdir /");
    close(rootfd);
    const char *hn = o->hostname ? o->hostname : "mags-vm";
    if (sethostname(hn, strlen(hn)) < 0) die("sethostname");
    int fd = open("/proc/self/oom_score_adj", O_WRONLY | O_CLOEXEC);
    if (fd >= 0) { (void)!write(fd, "-1000", 5); close(fd); }
    for (int f = 3; f < 1024; f++) close(f);
    if (o->seccomp) install_seccomp();
    drop_capabilities();
    setenv("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", 1);
    return run_init();
}

/* cgexec: join cgroups, optionally mount an overlay root in a private mount namespace (so the
   mount dies with the sandbox and never shows on the host), then exec a command (runsc).
   --mask DIR covers DIR with an empty read-only tmpfs in that namespace: gVisor's netstack
   mode refuses to start when /proc/sys/net/core/rmem_default exists, its (wrong on kernels
   >= 6.x, where that sysctl is per network namespace) test for "root network namespace". */
static int run_cgexec(int argc, char **argv) {
    const char *dirs[16];
    const char *lowers[MAX_ITEMS];
    const char *masks[MAX_ITEMS];
    const char *upper = NULL, *work = NULL, *root = NULL;
    int n = 0, nl = 0, nm = 0, i = 2;
    for (; i < argc; i++) {
        if (strcmp(argv[i], "--") == 0) { i++; break; }
        if (i + 1 >= argc) { errno = EINVAL; die("cgexec: %s needs a value", argv[i]); }
        if (strcmp(argv[i], "--cgroup") == 0 && n < 16) dirs[n++] = argv[++i];
        else if (strcmp(argv[i], "--lower") == 0 && nl < MAX_ITEMS) lowers[nl++] = argv[++i];
        else if (strcmp(argv[i], "--upper") == 0) upper = argv[++i];
        else if (strcmp(argv[i], "--work") == 0) work = argv[++i];
        else if (strcmp(argv[i], "--root") == 0) root = argv[++i];
        else if (strcmp(argv[i], "--mask") == 0 && nm < MAX_ITEMS) masks[nm++] = argv[++i];
        else { errno = EINVAL; die("cgexec: unexpected %s", argv[i]); }
    }
    if (i >= argc) { errno = EINVAL; die("cgexec: no command"); }
    join_cgroups(dirs, n);
    if (root || nm) {
        if (unshare(CLONE_NEWNS) < 0) die("unshare mount namespace");
        if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0) die("make / private");
    }
    for (int k = 0; k < nm; k++)
        if (mount("tmpfs", masks[k], "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, "size=4k,mode=0555") < 0)
            die("mask %s", masks[k]);
    if (root) {
        if (!upper || !work || nl == 0) { errno = EINVAL; die("cgexec: --root needs --upper, --work and --lower"); }
        char opts[8192];
        size_t off = (size_t)snprintf(opts, sizeof(opts), "lowerdir=");
        for (int k = 0; k < nl; k++)
            off += (size_t)snprintf(opts + off, sizeof(opts) - off, "%s%s", k ? ":" : "", lowers[k]);
        snprintf(opts + off, sizeof(opts) - off, ",upperdir=%s,workdir=%s", upper, work);
        if (mount("overlay", root, "overlay", MS_NODEV, opts) < 0) die("mount overlay root (%s)", opts);
    }
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    execvp(argv[i], argv + i);
    die("exec %s", argv[i]);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: mags-sandbox init | launch [options] | cgexec --cgroup DIR -- CMD | version\n");
        return 2;
    }
    if (strcmp(argv[1], "version") == 0) { printf("%s\n", PROTOCOL_VERSION); return 0; }
    if (strcmp(argv[1], "init") == 0) return run_init();
    if (strcmp(argv[1], "cgexec") == 0) return run_cgexec(argc, argv);
    if (strcmp(argv[1], "launch") != 0) { fprintf(stderr, "mags-sandbox: unknown mode %s\n", argv[1]); return 2; }

    struct launch_opts o;
    memset(&o, 0, sizeof(o));
    o.seccomp = 1;
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
#define NEEDV() do { if (!v) { errno = EINVAL; die("%s needs a value", a); } i++; } while (0)
        if (strcmp(a, "--cgroup") == 0) { NEEDV(); if (o.ncgroups < 16) o.cgroups[o.ncgroups++] = v; }
        else if (strcmp(a, "--netns") == 0) { NEEDV(); o.netns = v; }
        else if (strcmp(a, "--lower") == 0) { NEEDV(); if (o.nlowers < MAX_ITEMS) o.lowers[o.nlowers++] = v; }
        else if (strcmp(a, "--upper") == 0) { NEEDV(); o.upper = v; }
        else if (strcmp(a, "--work") == 0) { NEEDV(); o.work = v; }
        else if (strcmp(a, "--root") == 0) { NEEDV(); o.root = v; }
        else if (strcmp(a, "--hostname") == 0) { NEEDV(); o.hostname = v; }
        else if (strcmp(a, "--bind") == 0) { NEEDV(); if (o.nbinds < MAX_ITEMS) o.binds[o.nbinds++] = v; }
        else if (strcmp(a, "--tmpfs") == 0) { NEEDV(); if (o.ntmpfs < MAX_ITEMS) o.tmpfs[o.ntmpfs++] = v; }
        else if (strcmp(a, "--no-seccomp") == 0) o.seccomp = 0;
        else { errno = EINVAL; die("unknown option %s", a); }
    }
    return run_launch(&o);
}
