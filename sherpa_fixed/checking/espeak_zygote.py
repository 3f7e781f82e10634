"""A process that synthesises each sentence from a pristine espeak-ng, so the same request gives the same audio.

libespeak-ng keeps state in static variables across calls (the Klatt voices' noise generator, for one),
and espeak_Terminate/espeak_Initialize do not reset it: in one process the second synthesis of a
sentence differs from the first, so a set's audio would depend on the order its sentences were made in.
The espeak-ng program is deterministic because every run is a fresh process. This one initialises the
library once, never synthesises itself, and forks a child per request (a few milliseconds): each child
starts from the same pristine state, synthesises, writes its samples and exits.

Protocol (stdin/stdout, one request at a time): the first line out is the version; each request is a JSON
line {"text", "voice", "speed", "pitch"}; each answer is a little-endian int32 status (0 ok, 1 unknown
voice, 2 synthesis failed) and uint32 byte count, then that many bytes of int16 samples at the rate the
version line names.

    python -m sherpa_fixed.checking.espeak_zygote      (started by speechgen; needs espeakng-loader)
"""

from __future__ import annotations

import ctypes
import json
import os
import struct
import sys

OUTPUT_SYNCHRONOUS, RATE, PITCH, POS_CHARACTER = 2, 1, 3, 1


def _library():
    import espeakng_loader

    lib = ctypes.CDLL(espeakng_loader.get_library_path())
    lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
    lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
    lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
    lib.espeak_Synth.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
                                 ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
    lib.espeak_Info.restype = ctypes.c_char_p
    rate = lib.espeak_Initialize(OUTPUT_SYNCHRONOUS, 0, espeakng_loader.get_data_path().encode(), 0)
    return lib, rate


def _synthesise(lib, req: dict) -> tuple[int, bytes]:
    chunks: list[bytes] = []

    def receive(wav, n, _events):
        if n > 0:
            chunks.append(ctypes.string_at(wav, 2 * n))
        return 0

    callback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)(receive)
    lib.espeak_SetSynthCallback(callback)
    if lib.espeak_SetVoiceByName(str(req["voice"]).encode()) != 0:
        return 1, b""
    lib.espeak_SetParameter(RATE, int(req["speed"]), 0)
    lib.espeak_SetParameter(PITCH, int(req["pitch"]), 0)
    text = str(req["text"]).encode("utf-8")
    if lib.espeak_Synth(text, len(text) + 1, 0, POS_CHARACTER, 0, 0, None, None) != 0:
        return 2, b""
    return 0, b"".join(chunks)


def main() -> None:
    import importlib.metadata

    lib, rate = _library()
    out = sys.stdout.buffer
    version = f"eSpeak NG {lib.espeak_Info(None).decode()} (espeakng-loader " \
              f"{importlib.metadata.version('espeakng-loader')})"
    out.write((json.dumps({"version": version, "rate": rate}) + "\n").encode())
    out.flush()
    for line in sys.stdin.buffer:
        req = json.loads(line)
        pid = os.fork()
        if pid == 0:  # the child: pristine state, one sentence, gone
            status, data = _synthesise(lib, req)
            out.write(struct.pack("<iI", status, len(data)) + data)
            out.flush()
            os._exit(0)
        _, code = os.waitpid(pid, 0)
        if code != 0:
            out.write(struct.pack("<iI", 2, 0))
            out.flush()


if __name__ == "__main__":
    main()
