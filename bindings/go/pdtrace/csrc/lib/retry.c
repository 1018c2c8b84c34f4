/*
 * Retry policy of the OTLP/HTTP transport: which statuses are retried,
 * the backoff schedule with jitter, and the Retry-After parser.
 *
 * HTTP-dates are parsed by hand (no strptime, no locale, no timegm): the
 * three forms HTTP allows are fixed-layout text in English and UTC, so a
 * small parser plus a days-since-epoch computation is all it takes.
 */
#include <stdint.h>
#include <string.h>
#include <time.h>

#include "transport.h"

#define BACKOFF_BASE_MS 100
#define BACKOFF_CAP_MS 5000

int pdti_status_retryable(long http_status)
{
    return http_status == 429 || http_status == 502 || http_status == 503 ||
           http_status == 504;
}

/* One xorshift64 step; a zero state is replaced by a fixed odd constant. */
static uint64_t rng_next(uint64_t *state)
{
    uint64_t x = *state;

    if (x == 0)
        x = UINT64_C(0x9E3779B97F4A7C15);
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    *state = x;
    return x;
}

int64_t pdti_backoff_ms(unsigned attempt, uint64_t *rng)
{
    int64_t base = BACKOFF_BASE_MS;
    int64_t lo, span;
    unsigned i;

    if (attempt == 0)
        attempt = 1;
    for (i = 1; i < attempt && base < BACKOFF_CAP_MS; i++)
        base *= 2;
    if (base > BACKOFF_CAP_MS)
        base = BACKOFF_CAP_MS;
    if (rng == NULL)
        return base;
    lo = base / 2;
    span = base - lo + 1;
    return lo + (int64_t)(rng_next(rng) % (uint64_t)span);
}

/* ---- HTTP-date ---------------------------------------------------------- */

static const char *const month_names[12] = {
    "Jan", "Feb", "Mar", "Apr", "May", "Jun",
    "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"
};
static const char *const day_short[7] = {
    "Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"
};
static const char *const day_long[7] = {
    "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday",
    "Sunday"
};

static int lower(int c)
{
    return (c >= 'A' && c <= 'Z') ? c + ('a' - 'A') : c;
}

/* Case-insensitive match of word at *p; advances *p on success. */
static int take_word(const char **p, const char *word)
{
    size_t n = strlen(word), i;

    for (i = 0; i < n; i++)
        if ((*p)[i] == '\0' || lower((unsigned char)(*p)[i]) !=
                                   lower((unsigned char)word[i]))
            return 0;
    *p += n;
    return 1;
}

static int take_char(const char **p, char c)
{
    if (**p != c)
        return 0;
    (*p)++;
    return 1;
}

/* Exactly n decimal digits. */
static int take_digits(const char **p, int n, int *out)
{
    int v = 0, i;

    for (i = 0; i < n; i++) {
        char c = (*p)[i];
        if (c < '0' || c > '9')
            return 0;
        v = v * 10 + (c - '0');
    }
    *p += n;
    *out = v;
    return 1;
}

static int take_month(const char **p, int *mon)
{
    int i;

    for (i = 0; i < 12; i++)
        if (take_word(p, month_names[i])) {
            *mon = i + 1;
            return 1;
        }
    return 0;
}

/* "hh:mm:ss" */
static int take_time(const char **p, int *h, int *mi, int *s)
{
    return take_digits(p, 2, h) && take_char(p, ':') &&
           take_digits(p, 2, mi) && take_char(p, ':') &&
           take_digits(p, 2, s);
}

static int is_leap(int64_t y)
{
    return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

/* Leap years among 1..y (y >= 0). */
static int64_t leaps_through(int64_t y)
{
    return y / 4 - y / 100 + y / 400;
}

/* Days from 1970-01-01 to January 1st of year y (y >= 1). */
static int64_t days_to_year(int64_t y)
{
    return 365 * (y - 1970) + (leaps_through(y - 1) - leaps_through(1969));
}

static const int month_start[12] = {
    0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334
};

static int days_in_month(int64_t y, int m)
{
    static const int len[12] = { 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30,
                                 31 };
    return len[m - 1] + (m == 2 && is_leap(y));
}

/* The calendar year containing Unix time t. */
static int64_t year_of(time_t t)
{
    int64_t days = (int64_t)(t / 86400) - ((t % 86400) < 0);
    int64_t y = 1970 + days / 366;

    if (y < 1)
        y = 1;
    while (y > 1 && days_to_year(y) > days)
        y--;
    while (days_to_year(y + 1) <= days)
        y++;
    return y;
}

/*
 * Parses one of the three HTTP-date forms into Unix seconds. The weekday
 * name must be a real one but is not checked against the date.
 */
static int parse_http_date(const char *p, time_t now, int64_t *out)
{
    int d = 0, mon = 0, year = 0, h = 0, mi = 0, s = 0, i, ok = 0;
    int64_t y = 0, t;

    for (i = 0; i < 7 && !ok; i++) {
        const char *q = p;
        /* IMF-fixdate: "Sun, 06 Nov 1994 08:49:37 GMT" */
        if (take_word(&q, day_short[i]) && take_char(&q, ',')) {
            ok = take_char(&q, ' ') && take_digits(&q, 2, &d) &&
                 take_char(&q, ' ') && take_month(&q, &mon) &&
                 take_char(&q, ' ') && take_digits(&q, 4, &year) &&
                 take_char(&q, ' ') && take_time(&q, &h, &mi, &s) &&
                 take_char(&q, ' ') && take_word(&q, "GMT") && *q == '\0';
            if (!ok)
                return 0;
            y = year;
            break;
        }
        q = p;
        /* RFC 850: "Sunday, 06-Nov-94 08:49:37 GMT" */
        if (take_word(&q, day_long[i]) && take_char(&q, ',')) {
            ok = take_char(&q, ' ') && take_digits(&q, 2, &d) &&
                 take_char(&q, '-') && take_month(&q, &mon) &&
                 take_char(&q, '-') && take_digits(&q, 2, &year) &&
                 take_char(&q, ' ') && take_time(&q, &h, &mi, &s) &&
                 take_char(&q, ' ') && take_word(&q, "GMT") && *q == '\0';
            if (!ok)
                return 0;
            /*
             * Two-digit year: the one with these digits that is at most
             * 50 years ahead of now, and less than 50 years behind it.
             */
            {
                int64_t cur = year_of(now);
                y = cur - cur % 100 + year;
                if (y > cur + 50)
                    y -= 100;
                else if (y <= cur - 50)
                    y += 100;
            }
            break;
        }
        q = p;
        /* asctime: "Sun Nov  6 08:49:37 1994" */
        if (take_word(&q, day_short[i]) && take_char(&q, ' ')) {
            ok = take_month(&q, &mon) && take_char(&q, ' ');
            if (ok) {
                if (*q == ' ') {
                    q++;
                    ok = take_digits(&q, 1, &d);
                } else {
                    ok = take_digits(&q, 2, &d);
                }
            }
            ok = ok && take_char(&q, ' ') && take_time(&q, &h, &mi, &s) &&
                 take_char(&q, ' ') && take_digits(&q, 4, &year) &&
                 *q == '\0';
            if (!ok)
                return 0;
            y = year;
            break;
        }
    }
    if (!ok)
        return 0;
    if (y < 1 || d < 1 || d > days_in_month(y, mon) || h > 23 || mi > 59 ||
        s > 60)
        return 0;
    t = days_to_year(y) + month_start[mon - 1] + (mon > 2 && is_leap(y)) +
        (d - 1);
    *out = t * 86400 + h * 3600 + mi * 60 + s;
    return 1;
}

/* ---- Retry-After -------------------------------------------------------- */

#define RA_MAX_LEN 64

int64_t pdti_parse_retry_after(const char *value, time_t now)
{
    char buf[RA_MAX_LEN];
    size_t n;
    int64_t when;

    if (value == NULL)
        return -1;
    while (*value == ' ' || *value == '\t')
        value++;
    n = strlen(value);
    while (n > 0 && (value[n - 1] == ' ' || value[n - 1] == '\t' ||
                     value[n - 1] == '\r' || value[n - 1] == '\n'))
        n--;
    if (n == 0 || n >= sizeof(buf))
        return -1;
    memcpy(buf, value, n);
    buf[n] = '\0';

    if (buf[0] >= '0' && buf[0] <= '9') {
        /* delta-seconds: digits only; too large saturates. */
        int64_t secs = 0;
        size_t i;
        for (i = 0; i < n; i++) {
            if (buf[i] < '0' || buf[i] > '9')
                return -1;
            if (secs > (INT64_MAX / 1000 - (buf[i] - '0')) / 10)
                secs = INT64_MAX / 1000; /* saturated, keep validating */
            else
                secs = secs * 10 + (buf[i] - '0');
        }
        return secs >= INT64_MAX / 1000 ? INT64_MAX : secs * 1000;
    }
    if (!parse_http_date(buf, now, &when))
        return -1;
    if (when <= (int64_t)now)
        return 0;
    if (when - (int64_t)now > INT64_MAX / 1000)
        return INT64_MAX;
    return (when - (int64_t)now) * 1000;
}
