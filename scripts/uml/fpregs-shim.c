/*
 * fpregs-shim: an LD_PRELOAD library for the User-Mode Linux kernel
 * (linux.uml) that lets it save and restore its processes' extended FPU
 * state (ptrace NT_X86_XSTATE) on hosts whose XSAVE area is larger than
 * the buffer UML uses.
 *
 * Why: UML 6.1 keeps each process's FPU state in a buffer sized for the
 * features it knows (2696 bytes: up to AVX-512 and PKRU). The host kernel
 * refuses PTRACE_SETREGSET of anything but its whole XSAVE area, which on
 * CPUs with AMX is about 11 KiB, with EFAULT, and the guest dies at its
 * first process ("userspace - ptrace set fp regs failed, errno = 14").
 * Falling back to the legacy FXSAVE registers is no cure: the extended
 * state (YMM/ZMM upper halves) would be lost whenever UML runs its fault
 * stub in a process, which corrupts every program that uses AVX.
 *
 * What it does: PTRACE_GETREGSET/SETREGSET of NT_X86_XSTATE with a buffer
 * smaller than the host's XSAVE area go through a bounce buffer of the
 * host's size. UML sees the first bytes (all the state it knows); the rest
 * is AMX tile state, which no guest process can enable (it needs an
 * arch_prctl the host never sees), so it is in its initial state, all zero
 * with its header bits clear, and is written back as such. Every other
 * ptrace call goes to libc unchanged.
 *
 * Built by scripts/uml/run: cc -shared -fPIC -O2 -o fpregs-shim.so fpregs-shim.c -ldl
 */
#define _GNU_SOURCE
#include <cpuid.h>
#include <dlfcn.h>
#include <elf.h>
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

#ifndef NT_X86_XSTATE
#define NT_X86_XSTATE 0x202
#endif

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static unsigned char *bounce;
static size_t host_size;

/* The size of the standard-format XSAVE area for the features the host
 * enabled in XCR0: what the host kernel's regset has. */
static size_t xsave_size(void)
{
	unsigned int a, b, c, d;

	if (!__get_cpuid_count(0xd, 0, &a, &b, &c, &d))
		return 0;
	return b;
}

static long raw_ptrace(long req, pid_t pid, void *addr, void *data)
{
	return syscall(SYS_ptrace, req, pid, addr, data);
}

static long xstate(long req, pid_t pid, void *addr, struct iovec *iov)
{
	struct iovec big;
	long r;

	pthread_mutex_lock(&mu);
	if (bounce == NULL) {
		host_size = xsave_size();
		if (host_size > 0)
			bounce = calloc(1, host_size);
	}
	if (bounce == NULL || iov->iov_len >= host_size) {
		pthread_mutex_unlock(&mu);
		return raw_ptrace(req, pid, addr, iov);
	}
	big.iov_base = bounce;
	big.iov_len = host_size;
	if (req == PTRACE_GETREGSET) {
		r = raw_ptrace(req, pid, addr, &big);
		if (r == 0) {
			size_t n = big.iov_len < iov->iov_len ? big.iov_len : iov->iov_len;
			memcpy(iov->iov_base, bounce, n);
			iov->iov_len = n;
		}
	} else {
		memcpy(bounce, iov->iov_base, iov->iov_len);
		memset(bounce + iov->iov_len, 0, host_size - iov->iov_len);
		r = raw_ptrace(req, pid, addr, &big);
	}
	pthread_mutex_unlock(&mu);
	return r;
}

long ptrace(enum __ptrace_request request, ...)
{
	static long (*real)(enum __ptrace_request, pid_t, void *, void *);
	va_list ap;
	pid_t pid;
	void *addr, *data;

	va_start(ap, request);
	pid = va_arg(ap, pid_t);
	addr = va_arg(ap, void *);
	data = va_arg(ap, void *);
	va_end(ap);
	if ((request == PTRACE_GETREGSET || request == PTRACE_SETREGSET) &&
	    (unsigned long)addr == NT_X86_XSTATE && data != NULL)
		return xstate(request, pid, addr, data);
	if (real == NULL) {
		real = (long (*)(enum __ptrace_request, pid_t, void *, void *))dlsym(RTLD_NEXT, "ptrace");
		if (real == NULL) {
			errno = ENOSYS;
			return -1;
		}
	}
	/* libc's wrapper handles the PEEK requests' return convention. */
	return real(request, pid, addr, data);
}
