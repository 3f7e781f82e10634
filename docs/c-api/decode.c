/*
 * decode.c: load a sherpa-fixed prepared NeMo transducer folder through
 * sherpa-onnx's C API (what sherpa-rs, Go, C#, Swift, Dart and Kotlin bind),
 * decode one 16-bit PCM WAV file, print the tokens and the text.
 *
 *   decode MODEL_DIR WAV [--int8] [--threads N]
 *
 * MODEL_DIR holds encoder.onnx, decoder.onnx, joiner.onnx and tokens.txt
 * (with --int8: encoder.int8.onnx, decoder.int8.onnx, joiner.int8.onnx).
 *
 * Build it against the headers and library of the release you link, never a
 * copy of the struct definitions (the config structs grew over releases):
 *
 *   SO=$(python -c 'import sherpa_onnx, os; print(os.path.dirname(sherpa_onnx.__file__))')
 *   gcc -O1 -o decode decode.c -I"$SO/include" -L"$SO/lib" \
 *       -lsherpa-onnx-c-api -Wl,-rpath,"$SO/lib"
 *
 * The config is zeroed and only named fields are set, so the one source
 * compiles against every release from 1.9.24 (the first with NeMo
 * transducers) to 2.0.1: fields a release added later stay zero, which the
 * C API reads as "use the default". Releases before 1.10.19 named the
 * functions without the SherpaOnnx prefix: add -DSHERPA_ONNX_UNPREFIXED_API.
 *
 * Output (stdout), one item per line:
 *   count=N        number of tokens
 *   token=PIECE    N lines, in order
 *   text=TEXT
 * Exit: 0 decoded; 1 the recognizer was not created (the C API returned
 * NULL); 2 bad arguments or unreadable WAV. sherpa-onnx itself may end the
 * process on a folder it rejects (exit(-1) -> 255, or an uncaught C++
 * exception -> SIGABRT): run `sherpa-fixed inspect` on the folder first.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sherpa-onnx/c-api/c-api.h"

#ifdef SHERPA_ONNX_UNPREFIXED_API /* sherpa-onnx < 1.10.19 */
#define SherpaOnnxCreateOfflineRecognizer CreateOfflineRecognizer
#define SherpaOnnxDestroyOfflineRecognizer(p) DestroyOfflineRecognizer((SherpaOnnxOfflineRecognizer *)(p))
#define SherpaOnnxCreateOfflineStream CreateOfflineStream
#define SherpaOnnxDestroyOfflineStream(p) DestroyOfflineStream((SherpaOnnxOfflineStream *)(p))
#define SherpaOnnxAcceptWaveformOffline AcceptWaveformOffline
#define SherpaOnnxDecodeOfflineStream DecodeOfflineStream
#define SherpaOnnxGetOfflineStreamResult GetOfflineStreamResult
#define SherpaOnnxDestroyOfflineRecognizerResult DestroyOfflineRecognizerResult
#endif

#define PATH_MAX_LEN 4096

static int join(char *out, const char *dir, const char *name) {
  int n = snprintf(out, PATH_MAX_LEN, "%s/%s", dir, name);
  return n > 0 && n < PATH_MAX_LEN;
}

int main(int argc, char **argv) {
  const char *dir = NULL, *wav_path = NULL;
  int int8 = 0, threads = 1;
  for (int i = 1; i < argc; ++i) {
    if (strcmp(argv[i], "--int8") == 0) {
      int8 = 1;
    } else if (strcmp(argv[i], "--threads") == 0 && i + 1 < argc) {
      threads = atoi(argv[++i]);
    } else if (!dir) {
      dir = argv[i];
    } else if (!wav_path) {
      wav_path = argv[i];
    } else {
      dir = NULL;
      break;
    }
  }
  if (!dir || !wav_path || threads < 1) {
    fprintf(stderr, "usage: %s MODEL_DIR WAV [--int8] [--threads N]\n", argv[0]);
    return 2;
  }

  static char encoder[PATH_MAX_LEN], decoder[PATH_MAX_LEN], joiner[PATH_MAX_LEN], tokens[PATH_MAX_LEN];
  const char *suffix = int8 ? ".int8.onnx" : ".onnx";
  char name[64];
  snprintf(name, sizeof name, "encoder%s", suffix);
  int ok = join(encoder, dir, name);
  snprintf(name, sizeof name, "decoder%s", suffix);
  ok = ok && join(decoder, dir, name);
  snprintf(name, sizeof name, "joiner%s", suffix);
  ok = ok && join(joiner, dir, name) && join(tokens, dir, "tokens.txt");
  if (!ok) {
    fprintf(stderr, "error: MODEL_DIR path too long\n");
    return 2;
  }

  const SherpaOnnxWave *wave = SherpaOnnxReadWave(wav_path);
  if (!wave) {
    fprintf(stderr, "error: cannot read WAV %s (16-bit PCM mono expected)\n", wav_path);
    return 2;
  }

  SherpaOnnxOfflineRecognizerConfig config;
  memset(&config, 0, sizeof config);
  config.feat_config.sample_rate = 16000;
  config.feat_config.feature_dim = 80; /* the encoder's feat_dim metadata overrides it */
  config.model_config.transducer.encoder = encoder;
  config.model_config.transducer.decoder = decoder;
  config.model_config.transducer.joiner = joiner;
  config.model_config.tokens = tokens;
  config.model_config.num_threads = threads;
  config.model_config.provider = "cpu";
  config.model_config.model_type = "nemo_transducer";
  config.decoding_method = "greedy_search";

  const SherpaOnnxOfflineRecognizer *recognizer = SherpaOnnxCreateOfflineRecognizer(&config);
  if (!recognizer) {
    fprintf(stderr, "error: sherpa-onnx did not create a recognizer for %s (see its message above)\n", dir);
    SherpaOnnxFreeWave(wave);
    return 1;
  }

  const SherpaOnnxOfflineStream *stream = SherpaOnnxCreateOfflineStream(recognizer);
  SherpaOnnxAcceptWaveformOffline(stream, wave->sample_rate, wave->samples, wave->num_samples);
  SherpaOnnxDecodeOfflineStream(recognizer, stream);
  const SherpaOnnxOfflineRecognizerResult *result = SherpaOnnxGetOfflineStreamResult(stream);

  printf("count=%d\n", (int)result->count);
  for (int i = 0; i < result->count; ++i) {
    printf("token=%s\n", result->tokens_arr[i]);
  }
  printf("text=%s\n", result->text ? result->text : "");

  SherpaOnnxDestroyOfflineRecognizerResult(result);
  SherpaOnnxDestroyOfflineStream(stream);
  SherpaOnnxDestroyOfflineRecognizer(recognizer);
  SherpaOnnxFreeWave(wave);
  return 0;
}
