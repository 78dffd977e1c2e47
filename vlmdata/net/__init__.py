"""HTTP basics shared by every downloader: the session and the retry policy."""
