"""The one safety mechanism every command uses: read only what is inside, write only what is whole.

Its contract is written once, in docs/safety.md. Below every other part of
the package (it imports nothing but `errors`):

- `confine`: what may be read as part of a model folder (inside it, a
  regular file);
- `bounded`: how an input is opened and read (regular files only, never
  blocking on a FIFO, never more bytes than the file can legitimately need);
- `lock`: one writer per folder or file (flock, waited for, never stale);
- `atomic`: temp file, fsync, rename; sweeping what dead runs left;
- `journal`: in-place runs that are finished or undone by the next run;
- `output`: new folders built hidden, renamed into place, and `--force`
  that replaces only what sherpa-fixed wrote;
- `session`: the locks and recovery every writing run starts with.
"""
