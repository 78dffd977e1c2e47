"""What a root holds: its folder checks, the journal of placed files, the lock file of hashes, unfinished downloads."""
from vlmdata.state.root import Root  # noqa: F401
from vlmdata.state.journal import Journal, JournalEntry, is_placed, satisfied, subset_tag  # noqa: F401
from vlmdata.state.partial import partial_bytes  # noqa: F401
from vlmdata.state.lockfile import LockFile, LockEntry  # noqa: F401
