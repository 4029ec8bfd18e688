/* Shared libraries that corestream's ONNX Runtime probe must reject, built by
 * tests/ort_probe.rs with one of:
 *   (nothing)                              no OrtGetApiBase: not ONNX Runtime
 *   -DFAKE_VERSION="\"1.10.0\""            OrtGetApiBase, but a version that is too old
 *   -DFAKE_VERSION="\"1.999.0\""           a new enough version whose GetApi gives no API
 * OrtApiBase's layout is ONNX Runtime's (onnxruntime_c_api.h): GetApi, then GetVersionString.
 */
#include <stdint.h>
#include <stddef.h>

int corestream_fake_ort_marker(void) { return 42; }

#ifdef FAKE_VERSION
typedef struct OrtApi OrtApi;

typedef struct OrtApiBase {
    const OrtApi *(*GetApi)(uint32_t version);
    const char *(*GetVersionString)(void);
} OrtApiBase;

/* Never an API: a too old version is rejected before GetApi is called, a new one gets null. */
static const OrtApi *get_api(uint32_t version) {
    (void)version;
    return NULL;
}

static const char *get_version(void) { return FAKE_VERSION; }

static const OrtApiBase base = {get_api, get_version};

const OrtApiBase *OrtGetApiBase(void) { return &base; }
#endif
