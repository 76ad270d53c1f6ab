/*
 * mags-sandbox: the namespaces sandbox launcher and the in-sandbox init.
 *
 *   mags-sandbox init                run the init daemon on fd 0/1 (inside gVisor or a VM)
 *   mags-sandbox launch [options]    namespaces runtime: build the sandbox, then become its init
 *                                    (launch.c)
 *   mags-sandbox cgexec --cgroup DIR... [--lower/--upper/--work/--root] [--mask DIR] -- CMD [ARGS]
 *                                    join cgroups, mount the overlay root and hide DIRs (empty
 *                                    read-only tmpfs) in a private mount namespace, exec CMD
 *   mags-sandbox probe-userns BASE:COUNT DIR...   can launch --userns work here (exit 0)?
 *   mags-sandbox version
 *
 * This file is the init: it serves the sandbox protocol (protocol.h) on fd 0/1, spawns
 * processes, streams their output and writes files.  launch.c builds a namespaces sandbox;
 * harden.c holds the seccomp filter and the capability set.
 *
 * Why our own code and not bubblewrap/crun: we need the sandbox's pid 1 to be our init (the
 * protocol endpoint), the overlay mounted inside the sandbox's own mount namespace (so no
 * mount ever leaks onto the host, even if the agent is killed), idmapped layers for a user
 * namespace, cgroup v1 and v2, and a start in a few milliseconds.  See docs/ARCHITECTURE.md.
 *
 * Built static (gcc -static) so the same binary runs inside any guest image.
 */
#include "sandbox.h"

extern char **environ;

void die(const char *fmt, ...) {
extern char **environ;


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

int run_init(void) {
    /* the agent runs with umask 077 (everything it writes is private); the guest's files get
       the usual modes */
    umask(022);
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
    /* Nothing in the sandbox may reach this process: not by ptrace, not through
       /proc/1/{fd,exe,root,mem,environ} -- protocol frames written to /proc/1/fd/1 would forge
       the job's output and exit code, and /proc/1/exe is the host's launcher binary. */
    if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) < 0) die("make init non-dumpable");
    /* fd 2 was the host's launch log, for errors while the sandbox was built; from here on
       errors are protocol frames, so nothing a guest does can write to a host file */
    int nul = open("/dev/null", O_WRONLY | O_CLOEXEC);
    if (nul < 0) die("open /dev/null");
    if (nul != 2) { dup2(nul, 2); close(nul); }
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


int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: mags-sandbox init | launch [options] | cgexec --cgroup DIR -- CMD | version\n");
        return 2;
    }
    if (strcmp(argv[1], "version") == 0) { printf("%s\n", PROTOCOL_VERSION); return 0; }
    if (strcmp(argv[1], "init") == 0) return run_init();
    if (strcmp(argv[1], "cgexec") == 0) return run_cgexec(argc, argv);
    if (strcmp(argv[1], "launch") == 0) return run_launch(argc, argv);
    if (strcmp(argv[1], "probe-userns") == 0) return run_probe_userns(argc, argv);
    fprintf(stderr, "mags-sandbox: unknown mode %s\n", argv[1]);
    return 2;
}
