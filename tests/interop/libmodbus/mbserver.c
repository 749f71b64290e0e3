/* mbserver: a read-only Modbus server built on libmodbus, so the edge agent's
 * Modbus driver is tested against a stack that is not its own (pymodbus).
 *
 *   mbserver (--tcp PORT | --rtu DEVICE) [--unit N]... [--silent-unknown]
 *            [--hole A:B]... [--slow-unit U:MS]... [--dead-unit U]...
 *            [--gateway-dead-unit U]... [--busy-every N] [--drop-every N]
 *            [--native-rtu] [--verbose]
 *
 * One thread, one request at a time, like a serial gateway: a slow unit delays
 * every request queued behind it, on every connection. TCP binds 127.0.0.1 and
 * serves many connections through select(); RTU runs 9600 8N1 on DEVICE (one
 * end of a pty pair in the tests). Prints READY on stdout once listening.
 *
 * Register map, the same for every unit (mirrored in ../libmodbus_server.py):
 *   hr:i = 3*i + 1 and ir:i = 3*i + 2 for i = 0..199, except:
 *   hr:100-101 float32 21.3 ABCD    hr:110-111 float32 21.3 BADC
 *   hr:102-103 float32 21.3 CDAB    hr:112-113 float32 21.3 DCBA
 *   hr:104-107 uint64 9007199254740993 (2^53 + 1) ABCD
 *   hr:108     int16 -1234          hr:114-115 int32 -123456789 ABCD
 *   hr:109     the unit id that answers
 *   hr:116-119 float64 21.3 ABCD    hr:120-123 int64 -9007199254740993 ABCD
 *   hr:124-127 string "TK-101" (NUL padded)   ir:100-101 float32 21.3 ABCD
 *   co:i = (i % 3 == 0), di:i = (i % 4 == 1) for i = 0..63
 * Anything past these answers exception 2, as libmodbus's modbus_reply does.
 * The IEEE values are written as register words by hand: modbus_set_float_abcd
 * and friends in 3.1.6 swap the bytes within each register on x86.
 *
 * Units served: those named by --unit, --slow-unit, --dead-unit and
 * --gateway-dead-unit; unit 1 when none is named.
 *
 * Faults, in the order they are applied to a request:
 *   a unit not served: TCP answers exception 11 (a gateway whose target is
 *     absent), nothing with --silent-unknown; RTU never answers.
 *   --dead-unit U: never answered. --gateway-dead-unit U: exception 11.
 *   --drop-every N (TCP): each N-th request closes its connection unanswered.
 *   --slow-unit U:MS: the answer is sent MS milliseconds late.
 *   --busy-every N: each N-th request answers exception 6 (server busy).
 *   any function code but 1-4: exception 1 (the server is read-only).
 *   --hole A:B: a holding-register read touching A..B answers exception 2.
 * Requests are counted over all units, including unanswered ones.
 *
 * RTU framing: libmodbus's own RTU receive serves one unit. After a request for
 * another unit it reads the next frame as that unit's answer, for up to its
 * response timeout (500 ms), even when none comes: a request sent in that window
 * is lost, and as it is parsed as an answer, its tail is read as the start of the
 * next request, which is lost too. By default frames are read here (a frame ends at 3.5 characters of silence,
 * CRC checked) so one process is several units on one bus; libmodbus still
 * builds every answer. --native-rtu uses modbus_receive for the lowest unit
 * served (and no other), to reproduce that 3.1.6 behaviour.
 *
 * --verbose logs one line per request to stderr:
 *   req=SEQ conn=FD unit=U fc=F addr=A count=C -> reply|exception N|silent|dropped
 * (conn=0 on RTU; "reply" is modbus_reply's answer, data or its own exception),
 * and "accept conn=FD" / "close conn=FD" for TCP connections.
 */
#define _POSIX_C_SOURCE 200809L /* nanosleep, select, accept under -std=c99 */
#include <errno.h>
#include <modbus.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define REGISTERS 200
#define BITS 64
#define MAX_HOLES 16
#define UNIT_REGISTER 109 /* holds the unit id that answers */
#define RTU_SILENCE_US 4000 /* 3.5 characters of 11 bits at 9600 baud */

static const struct { int address; uint16_t word; } FIXED[] = {
    {100, 0x41AA}, {101, 0x6666}, {102, 0x6666}, {103, 0x41AA},
    {104, 0x0020}, {105, 0x0000}, {106, 0x0000}, {107, 0x0001},
    {108, 0xFB2E}, {110, 0xAA41}, {111, 0x6666}, {112, 0x6666}, {113, 0xAA41},
    {114, 0xF8A4}, {115, 0x32EB}, {116, 0x4035}, {117, 0x4CCC}, {118, 0xCCCC},
    {119, 0xCCCD}, {120, 0xFFDF}, {121, 0xFFFF}, {122, 0xFFFF}, {123, 0xFFFF},
    {124, 0x544B}, {125, 0x2D31}, {126, 0x3031}, {127, 0x0000},
};

enum { SERVED = 1, DEAD = 2, GATEWAY_DEAD = 4 };

static struct {
    int tcp_port, native_rtu, silent_unknown, verbose;
    const char *rtu_device;
    unsigned char unit[256]; /* SERVED | DEAD | GATEWAY_DEAD per unit id */
    int slow_ms[256];
    int holes[MAX_HOLES][2], nholes;
    unsigned long busy_every, drop_every, requests;
} opt;

static void usage(const char *why)
{
    fprintf(stderr, "mbserver: %s\nsee the comment atop mbserver.c for the options\n", why);
    exit(2);
}

static void die(const char *why)
{
    fprintf(stderr, "mbserver: %s\n", why);
    exit(1);
}

static int unit_arg(const char *text)
{
    char *end;
    long unit = strtol(text, &end, 10);
    if (*end != '\0' && *end != ':') usage("a unit id is a number 0..255");
    if (unit < 0 || unit > 255) usage("a unit id is 0..255");
    return (int)unit;
}

static void parse(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        const char *name = argv[i], *value = i + 1 < argc ? argv[i + 1] : NULL;
        int takes_value = 1;
        if (!strcmp(name, "--silent-unknown")) opt.silent_unknown = 1, takes_value = 0;
        else if (!strcmp(name, "--native-rtu")) opt.native_rtu = 1, takes_value = 0;
        else if (!strcmp(name, "--verbose")) opt.verbose = 1, takes_value = 0;
        else if (value == NULL) usage("an option lacks its value");
        else if (!strcmp(name, "--tcp")) opt.tcp_port = atoi(value);
        else if (!strcmp(name, "--rtu")) opt.rtu_device = value;
        else if (!strcmp(name, "--unit")) opt.unit[unit_arg(value)] |= SERVED;
        else if (!strcmp(name, "--dead-unit")) opt.unit[unit_arg(value)] |= SERVED | DEAD;
        else if (!strcmp(name, "--gateway-dead-unit"))
            opt.unit[unit_arg(value)] |= SERVED | GATEWAY_DEAD;
        else if (!strcmp(name, "--slow-unit") && strchr(value, ':')) {
            opt.unit[unit_arg(value)] |= SERVED;
            opt.slow_ms[unit_arg(value)] = atoi(strchr(value, ':') + 1);
        }
        else if (!strcmp(name, "--hole") && opt.nholes < MAX_HOLES &&
                 sscanf(value, "%d:%d", &opt.holes[opt.nholes][0], &opt.holes[opt.nholes][1]) == 2)
            opt.nholes++;
        else if (!strcmp(name, "--busy-every")) opt.busy_every = strtoul(value, NULL, 10);
        else if (!strcmp(name, "--drop-every")) opt.drop_every = strtoul(value, NULL, 10);
        else usage(name);
        i += takes_value;
    }
    if ((opt.tcp_port > 0) == (opt.rtu_device != NULL)) usage("give --tcp PORT or --rtu DEVICE");
    int units = 0;
    for (int u = 0; u < 256; u++) units += (opt.unit[u] & SERVED) != 0;
    if (units == 0) opt.unit[1] = SERVED;
}

static modbus_mapping_t *make_map(void)
{
    modbus_mapping_t *map = modbus_mapping_new(BITS, BITS, REGISTERS, REGISTERS);
    if (map == NULL) die("out of memory");
    for (int i = 0; i < REGISTERS; i++) {
        map->tab_registers[i] = (uint16_t)(3 * i + 1);
        map->tab_input_registers[i] = (uint16_t)(3 * i + 2);
    }
    for (size_t k = 0; k < sizeof FIXED / sizeof FIXED[0]; k++)
        map->tab_registers[FIXED[k].address] = FIXED[k].word;
    map->tab_input_registers[100] = 0x41AA;
    map->tab_input_registers[101] = 0x6666;
    for (int i = 0; i < BITS; i++) {
        map->tab_bits[i] = i % 3 == 0;
        map->tab_input_bits[i] = i % 4 == 1;
    }
    return map;
}

static int in_hole(int fc, int address, int count)
{
    for (int h = 0; fc == 3 && h < opt.nholes; h++)
        if (address <= opt.holes[h][1] && address + count - 1 >= opt.holes[h][0]) return 1;
    return 0;
}

/* What to do with one request: -1 silence, -2 drop the connection, 0 answer
 * from the map, or an exception code. */
static int decide(int unit, int fc, int address, int count, int tcp)
{
    unsigned long n = ++opt.requests;
    if (!(opt.unit[unit] & SERVED)) return tcp && !opt.silent_unknown ? 11 : -1;
    if (opt.unit[unit] & DEAD) return -1;
    if (opt.unit[unit] & GATEWAY_DEAD) return 11;
    if (tcp && opt.drop_every && n % opt.drop_every == 0) return -2;
    if (opt.slow_ms[unit] > 0) {
        struct timespec pause = {opt.slow_ms[unit] / 1000, (opt.slow_ms[unit] % 1000) * 1000000L};
        while (nanosleep(&pause, &pause) == -1 && errno == EINTR) continue;
    }
    if (opt.busy_every && n % opt.busy_every == 0) return MODBUS_EXCEPTION_SLAVE_OR_SERVER_BUSY;
    if (fc < 1 || fc > 4) return MODBUS_EXCEPTION_ILLEGAL_FUNCTION;
    return in_hole(fc, address, count) ? MODBUS_EXCEPTION_ILLEGAL_DATA_ADDRESS : 0;
}

/* Serve one request of `length` bytes; returns -2 when the connection is to be closed.
 * The request is logged before it is answered, so a client that has its answer
 * finds it in the log. */
static int serve(modbus_t *ctx, modbus_mapping_t *map, const uint8_t *req, int length, int conn)
{
    int h = modbus_get_header_length(ctx), unit = req[h - 1], fc = req[h];
    int address = (req[h + 1] << 8) | req[h + 2], count = (req[h + 3] << 8) | req[h + 4];
    int action = decide(unit, fc, address, count, opt.tcp_port > 0);
    if (opt.verbose) {
        char outcome[16];
        snprintf(outcome, sizeof outcome, action > 0 ? "exception %d" : "reply", action);
        fprintf(stderr, "req=%lu conn=%d unit=%d fc=%d addr=%d count=%d -> %s\n", opt.requests,
                conn, unit, fc, address, count,
                action == -1 ? "silent" : action == -2 ? "dropped" : outcome);
    }
    map->tab_registers[UNIT_REGISTER] = (uint16_t)unit;
    if (action == 0 && modbus_reply(ctx, req, length, map) == -1) return -2;
    if (action > 0 && modbus_reply_exception(ctx, req, (unsigned)action) == -1) return -2;
    return action == -2 ? -2 : 0;
}

static void serve_tcp(modbus_t *ctx, modbus_mapping_t *map)
{
    uint8_t req[MODBUS_TCP_MAX_ADU_LENGTH];
    int listener = modbus_tcp_listen(ctx, 16);
    if (listener == -1) die(modbus_strerror(errno));
    fd_set open_fds, ready;
    FD_ZERO(&open_fds);
    FD_SET(listener, &open_fds);
    int top = listener;
    printf("READY %d\n", opt.tcp_port);
    fflush(stdout);
    for (;;) {
        ready = open_fds;
        if (select(top + 1, &ready, NULL, NULL, NULL) == -1) {
            if (errno == EINTR) continue;
            die(strerror(errno));
        }
        for (int fd = 0; fd <= top; fd++) {
            if (!FD_ISSET(fd, &ready)) continue;
            if (fd == listener) {
                int client = accept(listener, NULL, NULL);
                if (client == -1) continue;
                FD_SET(client, &open_fds);
                top = client > top ? client : top;
                if (opt.verbose) fprintf(stderr, "accept conn=%d\n", client);
                continue;
            }
            modbus_set_socket(ctx, fd);
            int length = modbus_receive(ctx, req);
            if (length > 0 && serve(ctx, map, req, length, fd) == 0) continue;
            close(fd); /* the peer left, sent what libmodbus refuses, or a drop is due */
            FD_CLR(fd, &open_fds);
            if (opt.verbose) fprintf(stderr, "close conn=%d\n", fd);
        }
    }
}

static uint16_t crc16(const uint8_t *data, int length)
{
    uint16_t crc = 0xFFFF;
    for (int i = 0; i < length; i++) {
        crc ^= data[i];
        for (int bit = 0; bit < 8; bit++) crc = (crc & 1) ? (crc >> 1) ^ 0xA001 : crc >> 1;
    }
    return crc;
}

/* One RTU frame: block for its first byte, then read until the line is quiet. */
static int read_frame(int fd, uint8_t *frame, int size)
{
    int length = 0;
    for (;;) {
        fd_set ready;
        struct timeval silence = {0, RTU_SILENCE_US};
        FD_ZERO(&ready);
        FD_SET(fd, &ready);
        int rc = select(fd + 1, &ready, NULL, NULL, length ? &silence : NULL);
        if (rc == -1 && errno == EINTR) continue;
        if (rc <= 0) return rc == 0 ? length : -1;
        ssize_t got = read(fd, frame + length, (size_t)(size - length));
        if (got == -1 && errno == EAGAIN) continue;
        if (got <= 0) return -1;
        length += (int)got;
        if (length == size) return length;
    }
}

static void serve_rtu(modbus_t *ctx, modbus_mapping_t *map)
{
    uint8_t req[MODBUS_RTU_MAX_ADU_LENGTH];
    if (modbus_connect(ctx) == -1) die(modbus_strerror(errno));
    modbus_flush(ctx); /* a device that boots has not heard what was sent while it was off */
    int unit = 0;
    while (!(opt.unit[unit] & SERVED)) unit++;
    modbus_set_slave(ctx, unit);
    printf("READY %s\n", opt.rtu_device);
    fflush(stdout);
    for (;;) {
        int length;
        if (opt.native_rtu) {
            length = modbus_receive(ctx, req); /* 0: libmodbus ignored the frame */
            if (length == -1 && (errno == EIO || errno == ECONNRESET || errno == EBADF)) break;
        } else {
            length = read_frame(modbus_get_socket(ctx), req, sizeof req);
            if (length == -1) break;
            /* A short frame or a bad CRC is noise on the line: a slave stays silent. */
            if (length < 4 || crc16(req, length - 2) != (req[length - 2] | req[length - 1] << 8))
                length = 0;
        }
        if (length > 0) serve(ctx, map, req, length, 0);
        else if (opt.verbose && length == 0) fprintf(stderr, "no request (ignored frame)\n");
    }
    die("the serial line closed");
}

int main(int argc, char **argv)
{
    parse(argc, argv);
    modbus_mapping_t *map = make_map();
    modbus_t *ctx = opt.rtu_device ? modbus_new_rtu(opt.rtu_device, 9600, 'N', 8, 1)
                                   : modbus_new_tcp("127.0.0.1", opt.tcp_port);
    if (ctx == NULL) die(modbus_strerror(errno));
    if (opt.rtu_device) serve_rtu(ctx, map);
    else serve_tcp(ctx, map);
    return 0;
}
