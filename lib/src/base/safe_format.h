// SafeFormat: a printf subset that writes into a caller's fixed buffer and nothing else.
//
// For code that runs while other threads may hold libc's locks (the agent between park and
// unpark, signal handlers): it never allocates, locks, touches stdio or locale, and makes no
// system call. Declared with the printf format attribute, so the compiler checks arguments.
//
// Supported: conversions d i u x X p s c %, length modifiers hh h l ll z j t, flags - 0 + space #,
// width and precision as digits or '*' (precision = maximum bytes for %s, minimum digits for
// integers). %s of nullptr prints "(null)"; %p prints 0x followed by lowercase hex ("0x0" for
// nullptr). Floating-point conversions consume their argument and print "%?"; any other
// conversion prints "%?" followed by the rest of the format verbatim (its argument type is
// unknown, so no further argument is read). Output is never NUL-terminated.
//
// Threads: pure functions, callable from any thread and from signal handlers.
#ifndef PROCMIG_BASE_SAFE_FORMAT_H_
#define PROCMIG_BASE_SAFE_FORMAT_H_

#include <time.h>

#include <cstdarg>
#include <cstddef>

namespace procmig {

// Formats into out[0, cap). Returns the bytes stored (<= cap); *truncated (if not null) tells
// whether the output was cut short.
size_t SafeVFormat(char* out, size_t cap, bool* truncated, const char* fmt, va_list ap);
size_t SafeFormat(char* out, size_t cap, bool* truncated, const char* fmt, ...)
    __attribute__((format(printf, 4, 5)));

// "YYYY-MM-DDTHH:MM:SS.uuuuuuZ" (UTC, microseconds) for a CLOCK_REALTIME time, computed without
// gmtime_r (glibc's takes the timezone lock). Years outside 0..9999 are clamped to the nearest of
// those bounds' first/last second. Writes exactly kUtcTimestampLength bytes, no NUL.
inline constexpr size_t kUtcTimestampLength = 27;
void FormatUtcTimestamp(const timespec& ts, char out[kUtcTimestampLength]);

}  // namespace procmig

#endif  // PROCMIG_BASE_SAFE_FORMAT_H_
