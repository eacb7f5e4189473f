/* tools/bench-tracker.d/srcaddr.c: LD_PRELOAD shim for wrk in tools/bench-tracker.
 *
 * Every IPv4 TCP connection to 127.0.0.0/8 is bound, before connect(), to a random source
 * address in 127.0.0.0/8 (the whole /8 is local on Linux's loopback), so that each of
 * wrk's connections comes from an address of its own, as real peers do. The trackers see
 * as many different announcing addresses as requests (a tracker that owns or limits peer
 * entries per address, as swarmbak's open mode does, treats them as different hosts).
 * Build: cc -O2 -shared -fPIC -o srcaddr.so srcaddr.c -ldl
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24
#endif

static int (*real_connect)(int, const struct sockaddr *, socklen_t);
static __thread uint64_t state;

static uint32_t next_random(void) {
    if (state == 0) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        state = ((uint64_t)ts.tv_nsec << 20) ^ (uint64_t)ts.tv_sec ^ ((uint64_t)getpid() << 40) ^
                (uint64_t)(uintptr_t)&state;
        if (state == 0) state = 1;
    }
    state ^= state << 13;
    state ^= state >> 7;
    state ^= state << 17;
    return (uint32_t)(state >> 16);
}

int connect(int fd, const struct sockaddr *addr, socklen_t len) {
    if (!real_connect) real_connect = dlsym(RTLD_NEXT, "connect");
    if (addr && addr->sa_family == AF_INET && len >= sizeof(struct sockaddr_in)) {
        const struct sockaddr_in *to = (const struct sockaddr_in *)addr;
        if ((ntohl(to->sin_addr.s_addr) >> 24) == 127) {
            struct sockaddr_in from = {0};
            uint32_t r = next_random() & 0x00ffffff;
            if ((r & 0xff) == 0 || (r & 0xff) == 0xff) r ^= 0x01;
            from.sin_family = AF_INET;
            from.sin_addr.s_addr = htonl(0x7f000000u | r);
            int one = 1;
            setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
            bind(fd, (struct sockaddr *)&from, sizeof from); /* on failure: 127.0.0.1 as usual */
        }
    }
    return real_connect(fd, addr, len);
}
