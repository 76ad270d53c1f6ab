/*
 * The namespaces runtime's launcher (`mags-sandbox launch`) and gVisor's wrapper (`cgexec`).
 *
 * launch options:
 *   --cgroup DIR        join this cgroup (repeatable: one per v1 hierarchy, or the v2 dir)
 *   --netns PATH        join this network namespace (a bind-mounted nsfs file)
 *   --userns BASE:COUNT guest ids 0..COUNT-1 are host ids BASE..BASE+COUNT-1 (a new user
 *                       namespace; layers are idmapped, so files keep their guest ids on disk)
 *   --lower DIR         overlay lower layer, topmost first (repeatable)
 *   --upper DIR --work DIR   overlay upper and work dirs (siblings in one directory)
 *   --root DIR          empty directory to mount the overlay root on; its parent is the
 *                       staging directory for the layers' mounts
 *   --bind SRC:DST[:ro] bind mount a host path at DST inside the sandbox (repeatable)
 *   --tmpfs DST:SIZE    mount a tmpfs (SIZE like 64m) at DST inside the sandbox
 *   --hostname NAME
 *   --no-seccomp        debugging only
 *
 * Order of a launch (all as host root until the last step):
 *   1. join the cgroups and the network namespace;
 *   2. with --userns, make the user namespace: a helper child unshares it and the launcher
 *      writes its id maps (writing them as real root keeps setgroups() usable in the guest);
 *   3. unshare mount, pid, uts, ipc, cgroup namespaces (owned by the host's user namespace, so
 *      a guest can never mount or unmount anything in them) and fork: the child is pid 1;
 *   4. clone each layer into the staging directory (idmapped into the user namespace, nosuid,
 *      nodev) and mount the overlay from those relative names, so no host path shows in the
 *      guest's mountinfo; with a user namespace the overlay is mounted with the guest root's
 *      fsuid, because overlayfs does its own work (work dir, copy-up) with the mounter's ids
 *      and those must be representable on the idmapped layers;
 *   5. /proc with runc's masks, a /dev of read-only device binds (a guest must never change a
 *      host inode), read-only /sys with /sys/firmware hidden, pivot_root, hostname;
 *   6. enter the user namespace (guest root = host BASE), seccomp, capabilities, become init.
 */
#include "sandbox.h"

#include <linux/mount.h>
#include <sys/fsuid.h>
#include <linux/capability.h>

#define MAX_ITEMS 64

struct launch_opts {
    const char *cgroups[16];
    int ncgroups;
    const char *netns;
    long userns_base, userns_count; /* userns_count 0: no user namespace */
    const char *lowers[MAX_ITEMS];
    int nlowers;
    const char *upper, *work, *root, *hostname;
    const char *binds[MAX_ITEMS];
    int nbinds;
    const char *tmpfs[MAX_ITEMS];
    int ntmpfs;
    int seccomp;
};

/* ------------------------------------------------------------------ new mount API */

static int sys_open_tree(int dfd, const char *path, unsigned flags) {
    return (int)syscall(SYS_open_tree, dfd, path, flags);
}

static int sys_mount_setattr(int dfd, const char *path, unsigned flags, struct mount_attr *attr) {
    return (int)syscall(SYS_mount_setattr, dfd, path, flags, attr, sizeof(*attr));
}

static int sys_move_mount(int from_dfd, const char *from, int to_dfd, const char *to, unsigned flags) {
    return (int)syscall(SYS_move_mount, from_dfd, from, to_dfd, to, flags);
}

/* ------------------------------------------------------------------ path helpers */

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
        unsigned long keep = flags & (MS_NOSUID | MS_NODEV | MS_NOEXEC);
        if (mount(NULL, proc_path, NULL, MS_BIND | MS_REMOUNT | MS_RDONLY | keep, NULL) < 0)
            die("remount read-only %s", dst);
        close(fd);
    }
}

/* Cover `rel` (inside root, if it exists) with an empty read-only tmpfs. */
static void hide_dir(int rootfd, const char *rel) {
    int fd = open_dir_nofollow(rootfd, rel, 0);
    if (fd < 0) return;
    char pp[64];
    snprintf(pp, sizeof(pp), "/proc/self/fd/%d", fd);
    if (mount("tmpfs", pp, "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, "size=0,mode=0555") < 0)
        die("hide %s", rel);
    close(fd);
}

static int write_file(const char *path, const char *val) {
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    ssize_t n = write(fd, val, strlen(val));
    close(fd);
    return n < 0 ? -1 : 0;
}

static void join_cgroups(const char **dirs, int n) {
    char pid[32], path[4096];
    snprintf(pid, sizeof(pid), "%d", getpid());
    for (int i = 0; i < n; i++) {
        snprintf(path, sizeof(path), "%s/cgroup.procs", dirs[i]);
        if (write_file(path, pid) < 0) die("join cgroup %s", dirs[i]);
    }
}

/* ------------------------------------------------------------------ user namespace */

/* A new user namespace mapping guest ids 0..count-1 to host base..base+count-1; returns an
   fd for it.  A helper child unshares it (a process cannot map its own namespace to ids it
   does not have) and exits once the maps are written: the fd keeps the namespace alive. */
static int make_userns(long base, long count) {
    int ready[2], done[2];
    if (pipe2(ready, O_CLOEXEC) < 0 || pipe2(done, O_CLOEXEC) < 0) die("pipe");
    pid_t h = fork();
    if (h < 0) die("fork user namespace helper");
    if (h == 0) {
        close(ready[0]);
        close(done[1]);
        char c = unshare(CLONE_NEWUSER) == 0 ? 'u' : 'x';
        if (write(ready[1], &c, 1) != 1) _exit(1);
        (void)!read(done[0], &c, 1); /* EOF once the launcher has what it needs */
        _exit(0);
    }
    close(ready[1]);
    close(done[0]);
    char c = 0;
    if (read(ready[0], &c, 1) != 1 || c != 'u') {
        errno = EPERM;
        die("cannot create a user namespace (set userns = false where the host cannot)");
    }
    close(ready[0]);
    char path[64], map[64];
    snprintf(map, sizeof(map), "0 %ld %ld\n", base, count);
    snprintf(path, sizeof(path), "/proc/%d/uid_map", h);
    if (write_file(path, map) < 0) die("write %s", path);
    snprintf(path, sizeof(path), "/proc/%d/gid_map", h);
    if (write_file(path, map) < 0) die("write %s", path);
    snprintf(path, sizeof(path), "/proc/%d/ns/user", h);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) die("open %s", path);
    close(done[1]);
    while (waitpid(h, NULL, 0) < 0 && errno == EINTR) {}
    return fd;
}

/* Clone `src` (a directory of the host) as a new detached mount -- idmapped into `userns_fd`
   if >= 0, always nosuid/nodev -- and attach it at `name` in the staging directory. */
static void stage_layer(int stagefd, const char *src, const char *name, int userns_fd) {
    int fd = sys_open_tree(AT_FDCWD, src, OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_SYMLINK_NOFOLLOW);
    if (fd < 0) die("clone layer %s", src);
    struct mount_attr attr;
    memset(&attr, 0, sizeof(attr));
    attr.attr_set = MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV;
    if (userns_fd >= 0) {
        attr.attr_set |= MOUNT_ATTR_IDMAP;
        attr.userns_fd = (uint64_t)userns_fd;
    }
    if (sys_mount_setattr(fd, "", AT_EMPTY_PATH, &attr) < 0)
        die("%s layer %s", userns_fd >= 0 ? "idmap" : "set flags of", src);
    if (mkdirat(stagefd, name, 0700) < 0 && errno != EEXIST) die("mkdir staging %s", name);
    if (sys_move_mount(fd, "", stagefd, name, MOVE_MOUNT_F_EMPTY_PATH) < 0) die("attach layer %s", src);
    close(fd);
}

/* Effective = permitted: setfsuid() to a non-zero id clears the file capabilities from the
   effective set, and the overlay mount needs them (it keeps the mounter's credentials). */
static void raise_effective_caps(void) {
    struct __user_cap_header_struct h = {_LINUX_CAPABILITY_VERSION_3, 0};
    struct __user_cap_data_struct d[2];
    if (syscall(SYS_capget, &h, d) < 0) die("capget");
    d[0].effective = d[0].permitted;
    d[1].effective = d[1].permitted;
    if (syscall(SYS_capset, &h, d) < 0) die("capset");
}

static const char *base_name(const char *path) {
    const char *s = strrchr(path, '/');
    return s ? s + 1 : path;
}

static void dir_name(const char *path, char *out, size_t n) {
    snprintf(out, n, "%s", path);
    char *s = strrchr(out, '/');
    if (s == out) s[1] = 0;
    else if (s) *s = 0;
    else snprintf(out, n, ".");
}

/* Mount the overlay root at `root`, its layers staged next to it (see the file comment). */
static void mount_root(struct launch_opts *o, int userns_fd) {
    char stage[4096], wdir[4096], other[4096];
    dir_name(o->root, stage, sizeof(stage));
    dir_name(o->upper, wdir, sizeof(wdir));
    dir_name(o->work, other, sizeof(other));
    if (strcmp(wdir, other) != 0) { errno = EINVAL; die("--upper and --work must be in one directory"); }
    int stagefd = open(stage, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (stagefd < 0) die("open staging directory %s", stage);
    char opts[8192];
    size_t off = (size_t)snprintf(opts, sizeof(opts), "lowerdir=");
    for (int i = 0; i < o->nlowers; i++) {
        char name[16];
        snprintf(name, sizeof(name), "l%d", i);
        stage_layer(stagefd, o->lowers[i], name, userns_fd);
        off += (size_t)snprintf(opts + off, sizeof(opts) - off, "%s%s", i ? ":" : "", name);
    }
    stage_layer(stagefd, wdir, "w", userns_fd);
    snprintf(opts + off, sizeof(opts) - off, ",upperdir=w/%s,workdir=w/%s", base_name(o->upper), base_name(o->work));
    if (fchdir(stagefd) < 0) die("chdir %s", stage);
    if (userns_fd >= 0) {
        setfsgid((gid_t)o->userns_base);
        setfsuid((uid_t)o->userns_base);
        raise_effective_caps();
    }
    if (mount("overlay", base_name(o->root), "overlay", MS_NODEV, opts) < 0) die("mount overlay root (%s)", opts);
    if (userns_fd >= 0) {
        setfsuid(0);
        setfsgid(0);
    }
    if (chdir("/") < 0) die("chdir /");
    close(stagefd);
}

/* ------------------------------------------------------------------ /proc, /dev, /sys */

static void setup_dev(int rootfd, const struct launch_opts *o) {
    /* with a user namespace the guest's root owns /dev, /dev/shm (host id BASE) */
    char owner[64] = "", opts[128];
    if (o->userns_count) snprintf(owner, sizeof(owner), ",uid=%ld,gid=%ld", o->userns_base, o->userns_base);
    snprintf(opts, sizeof(opts), "mode=755,size=65536k%s", owner);
    mount_at(rootfd, "tmpfs", "/dev", "tmpfs", MS_NOSUID | MS_NOEXEC, opts, 1);
    /* the host's own device nodes, read-only: writing to /dev/null works, changing its mode,
       owner or times does not (EROFS) */
    static const char *devs[] = {"null", "zero", "full", "random", "urandom", "tty"};
    char src[64];
    for (size_t i = 0; i < sizeof(devs) / sizeof(devs[0]); i++) {
        snprintf(src, sizeof(src), "/dev/%s", devs[i]);
        mount_at(rootfd, src, src, NULL, MS_BIND | MS_RDONLY | MS_NOSUID | MS_NOEXEC, NULL, 0);
    }
    snprintf(opts, sizeof(opts), "newinstance,ptmxmode=0666,mode=0620,gid=%ld", o->userns_count ? o->userns_base + 5 : 5);
    mount_at(rootfd, "devpts", "/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC, opts, 1);
    snprintf(opts, sizeof(opts), "mode=1777,size=65536k%s", owner);
    mount_at(rootfd, "shm", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, opts, 1);
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
    /* what runc masks or makes read-only: knobs that reach the host kernel, and what tells
       about the host's kernel memory layout */
    static const char *ro[] = {"/proc/sys", "/proc/sysrq-trigger", "/proc/irq", "/proc/bus", "/proc/fs"};
    static const char *masked[] = {"/proc/kcore", "/proc/keys", "/proc/timer_list", "/proc/sched_debug",
                                   "/proc/kallsyms", "/proc/latency_stats", "/proc/slabinfo",
                                   "/proc/vmallocinfo", "/proc/kpagecount", "/proc/kpageflags",
                                   "/proc/kpagecgroup", "/proc/pagetypeinfo"};
    static const char *hidden[] = {"proc/acpi", "proc/asound", "proc/scsi", "proc/driver"};
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
        if (mount("/dev/null", pp, NULL, MS_BIND, NULL) < 0) die("mask %s", masked[i]);
        close(fd);
    }
    for (size_t i = 0; i < sizeof(hidden) / sizeof(hidden[0]); i++) hide_dir(rootfd, hidden[i]);
}

static void setup_sys(int rootfd) {
    int sfd = open_dir_nofollow(rootfd, "sys", 1);
    if (sfd < 0) return;
    char pp[64];
    snprintf(pp, sizeof(pp), "/proc/self/fd/%d", sfd);
    if (mount("sysfs", pp, "sysfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) < 0) {
        fprintf(stderr, "mags-sandbox: sysfs not mounted: %s\n", strerror(errno));
        close(sfd);
        return;
    }
    close(sfd);
    /* ACPI tables, EFI variables, DMI serial numbers of the host; power capping knobs */
    hide_dir(rootfd, "sys/firmware");
    hide_dir(rootfd, "sys/devices/virtual/powercap");
}

/* ------------------------------------------------------------------ launch */

static volatile pid_t child_pid = 0;
static void forward_kill(int sig) {
    (void)sig;
    if (child_pid > 0) kill(child_pid, SIGKILL);
}

/* Per network namespace settings a sandbox needs without privileges on the host's side:
   ICMP echo through datagram sockets (it has no CAP_NET_RAW), and ports below 1024 for a
   root that is not root of the namespace's owner. */
static void tune_netns(void) {
    write_file("/proc/sys/net/ipv4/ping_group_range", "0 2147483647");
    write_file("/proc/sys/net/ipv4/ip_unprivileged_port_start", "0");
}

static char **launch_argv;
static int launch_argc;

/* The init is the launcher's fork, so /proc/1/cmdline would show the launch options: host
   paths, cgroup and network namespace names, the id range.  Overwrite them in place (the
   options are no longer needed) so the guest sees only "mags-init". */
static void hide_arguments(void) {
    if (!launch_argv || launch_argc < 1) return;
    char *start = launch_argv[0];
    char *end = launch_argv[launch_argc - 1] + strlen(launch_argv[launch_argc - 1]);
    memset(start, 0, (size_t)(end - start));
    snprintf(start, (size_t)(end - start) + 1, "%s", "mags-init");
    prctl(PR_SET_NAME, "mags-init", 0, 0, 0);
}

static int launch(struct launch_opts *o) {
    /* mount targets the launcher creates inside the guest's root get the usual modes, not the
       agent's private umask */
    umask(022);
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
        tune_netns();
    }
    int userns_fd = o->userns_count ? make_userns(o->userns_base, o->userns_count) : -1;
    if (unshare(CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWPID | CLONE_NEWCGROUP) < 0) die("unshare");

    pid_t pid = fork();
    if (pid < 0) die("fork");
    if (pid > 0) {
        /* the launcher stays as a tiny reaper the agent can wait on and kill */
        child_pid = pid;
        if (userns_fd >= 0) close(userns_fd);
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
    mount_root(o, userns_fd);
    int rootfd = open(o->root, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (rootfd < 0) die("open root");

    setup_proc(rootfd);
    setup_dev(rootfd, o);
    setup_sys(rootfd);
    for (int i = 0; i < o->ntmpfs; i++) {
        char spec[4096];
        snprintf(spec, sizeof(spec), "%s", o->tmpfs[i]);
        char *colon = strrchr(spec, ':');
        char data[160] = "mode=1777";
        size_t n = strlen(data);
        if (colon) { *colon = 0; n += (size_t)snprintf(data + n, sizeof(data) - n, ",size=%s", colon + 1); }
        if (o->userns_count) snprintf(data + n, sizeof(data) - n, ",uid=%ld,gid=%ld", o->userns_base, o->userns_base);
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
    for (int f = 3; f < 1024; f++) if (f != userns_fd) close(f);
    if (userns_fd >= 0) {
        /* from here on this process is the guest's root: host id BASE, no privilege over
           anything the user namespace does not own */
        if (setns(userns_fd, CLONE_NEWUSER) < 0) die("enter user namespace");
        close(userns_fd);
        if (setgroups(0, NULL) < 0) die("setgroups");
        if (setresgid(0, 0, 0) < 0) die("setresgid");
        if (setresuid(0, 0, 0) < 0) die("setresuid");
    }
    hide_arguments();
    if (o->seccomp) install_seccomp();
    drop_capabilities();
    setenv("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", 1);
    return run_init();
}

static long parse_long(const char *s, const char *what) {
    char *end = NULL;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || !end || end == s || v < 0) { errno = EINVAL; die("bad %s %s", what, s); }
    return v;
}

/* `mags-sandbox probe-userns BASE:COUNT DIR...`: exit 0 when a user namespace with that range
   can be made and every DIR's filesystem can be idmapped into it (what launch will need). */
static int probe_userns(int argc, char **argv, long base, long count) {
    int userns_fd = make_userns(base, count);
    for (int i = 3; i < argc; i++) {
        int fd = sys_open_tree(AT_FDCWD, argv[i], OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC);
        if (fd < 0) die("clone %s", argv[i]);
        struct mount_attr attr;
        memset(&attr, 0, sizeof(attr));
        attr.attr_set = MOUNT_ATTR_IDMAP;
        attr.userns_fd = (uint64_t)userns_fd;
        if (sys_mount_setattr(fd, "", AT_EMPTY_PATH, &attr) < 0) die("idmapped mount of %s", argv[i]);
        close(fd);
    }
    return 0;
}

static void parse_userns(const char *v, long *base, long *count) {
    const char *colon = strchr(v, ':');
    if (!colon) { errno = EINVAL; die("--userns wants BASE:COUNT, got %s", v); }
    char b[32];
    snprintf(b, sizeof(b), "%.*s", (int)(colon - v), v);
    *base = parse_long(b, "--userns base");
    *count = parse_long(colon + 1, "--userns count");
    if (*base == 0 || *count < 1 || *base + *count > 4294967294L) {
        errno = EINVAL;
        die("--userns range %s is not an unprivileged host range", v);
    }
}

int run_probe_userns(int argc, char **argv) {
    if (argc < 3) { errno = EINVAL; die("usage: probe-userns BASE:COUNT [DIR...]"); }
    long base, count;
    parse_userns(argv[2], &base, &count);
    return probe_userns(argc, argv, base, count);
}

int run_launch(int argc, char **argv) {
    launch_argv = argv;
    launch_argc = argc;
    struct launch_opts o;
    memset(&o, 0, sizeof(o));
    o.seccomp = 1;
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
#define NEEDV() do { if (!v) { errno = EINVAL; die("%s needs a value", a); } i++; } while (0)
        if (strcmp(a, "--cgroup") == 0) { NEEDV(); if (o.ncgroups < 16) o.cgroups[o.ncgroups++] = v; }
        else if (strcmp(a, "--netns") == 0) { NEEDV(); o.netns = v; }
        else if (strcmp(a, "--userns") == 0) {
            NEEDV();
            parse_userns(v, &o.userns_base, &o.userns_count);
        }
        else if (strcmp(a, "--lower") == 0) { NEEDV(); if (o.nlowers < MAX_ITEMS) o.lowers[o.nlowers++] = v; }
        else if (strcmp(a, "--upper") == 0) { NEEDV(); o.upper = v; }
        else if (strcmp(a, "--work") == 0) { NEEDV(); o.work = v; }
        else if (strcmp(a, "--root") == 0) { NEEDV(); o.root = v; }
        else if (strcmp(a, "--hostname") == 0) { NEEDV(); o.hostname = v; }
        else if (strcmp(a, "--bind") == 0) { NEEDV(); if (o.nbinds < MAX_ITEMS) o.binds[o.nbinds++] = v; }
        else if (strcmp(a, "--tmpfs") == 0) { NEEDV(); if (o.ntmpfs < MAX_ITEMS) o.tmpfs[o.ntmpfs++] = v; }
        else if (strcmp(a, "--no-seccomp") == 0) o.seccomp = 0;
        else { errno = EINVAL; die("unknown option %s", a); }
#undef NEEDV
    }
    return launch(&o);
}

/* cgexec: join cgroups, optionally mount an overlay root in a private mount namespace (so the
   mount dies with the sandbox and never shows on the host), then exec a command (runsc).
   --mask DIR covers DIR with an empty read-only tmpfs in that namespace: gVisor's netstack
   mode refuses to start when /proc/sys/net/core/rmem_default exists, its (wrong on kernels
   >= 6.x, where that sysctl is per network namespace) test for "root network namespace". */
int run_cgexec(int argc, char **argv) {
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
