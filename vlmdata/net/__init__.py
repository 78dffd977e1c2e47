"""HTTP basics shared by every downloader: the client (http.client underneath), the retry loop, URL display and mirror rewriting, the errors."""
