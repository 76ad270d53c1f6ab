/*
 * The capabilities a sandbox keeps and its seccomp filter (namespaces runtime).
 *
 * Capabilities: Docker's default set without MKNOD and NET_RAW.  NET_RAW would let a guest
 * forge packets with any source address (the host's rp_filter drops those too) and open
 * packet sockets; ping still works through ICMP datagram sockets (`ping_group_range`, set
 * per sandbox network namespace by the launcher).
 *
 * Seccomp: a deny-list of what container runtimes block for root in a container, plus
 * io_uring (its submission ring bypasses this filter entirely, and it has been a steady
 * source of kernel bugs: Docker blocks it too) and the AF_VSOCK / AF_XDP socket families
 * (host-facing transports a sandbox has no use for).
 */
#include "sandbox.h"

#include <linux/audit.h>
#include <linux/capability.h>
#include <linux/filter.h>
#include <linux/seccomp.h>

#ifndef AF_VSOCK
#define AF_VSOCK 40
#endif
#ifndef AF_XDP
#define AF_XDP 44
#endif
#ifndef __NR_io_uring_setup
#define __NR_io_uring_setup 425
#define __NR_io_uring_enter 426
#define __NR_io_uring_register 427
#endif

static const int keep_caps[] = {
    CAP_CHOWN, CAP_DAC_OVERRIDE, CAP_FSETID, CAP_FOWNER, CAP_SETGID, CAP_SETUID,
    CAP_SETFCAP, CAP_SETPCAP, CAP_NET_BIND_SERVICE, CAP_SYS_CHROOT, CAP_KILL, CAP_AUDIT_WRITE,
};

void drop_capabilities(void) {
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

#define RET(v) BPF_STMT(BPF_RET | BPF_K, (v))
#define DENY(nr) BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (nr), 0, 1), RET(SECCOMP_RET_ERRNO | EPERM)
#define NOSYS(nr) BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (nr), 0, 1), RET(SECCOMP_RET_ERRNO | ENOSYS)
#define CLONE_NS_FLAGS (CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWCGROUP)

void install_seccomp(void) {
#if defined(__x86_64__)
    struct sock_filter f[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0),
        RET(SECCOMP_RET_KILL_PROCESS),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        /* the x32 ABI aliases every syscall: refuse it wholesale */
        BPF_JUMP(BPF_JMP | BPF_JGE | BPF_K, 0x40000000, 0, 1),
        RET(SECCOMP_RET_ERRNO | EPERM),
        /* clone3 hides its flags in memory we cannot inspect: make libc fall back to clone */
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_clone3, 0, 1),
        RET(SECCOMP_RET_ERRNO | ENOSYS),
        /* clone with namespace flags */
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_clone, 0, 4),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, args[0])),
        BPF_JUMP(BPF_JMP | BPF_JSET | BPF_K, CLONE_NS_FLAGS, 0, 1),
        RET(SECCOMP_RET_ERRNO | EPERM),
        RET(SECCOMP_RET_ALLOW),
        /* socket(AF_VSOCK | AF_XDP, ...) */
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_socket, 0, 5),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, args[0])),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AF_VSOCK, 2, 0),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AF_XDP, 1, 0),
        RET(SECCOMP_RET_ALLOW),
        RET(SECCOMP_RET_ERRNO | EAFNOSUPPORT),
        /* io_uring: ENOSYS, so programs fall back to epoll/read/write */
        NOSYS(__NR_io_uring_setup), NOSYS(__NR_io_uring_enter), NOSYS(__NR_io_uring_register),
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
        RET(SECCOMP_RET_ALLOW),
    };
    struct sock_fprog prog = {(unsigned short)(sizeof(f) / sizeof(f[0])), f};
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0) die("no_new_privs");
    if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog) < 0) die("seccomp");
#else
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0) die("no_new_privs");
    fprintf(stderr, "mags-sandbox: no seccomp filter for this architecture\n");
#endif
}
