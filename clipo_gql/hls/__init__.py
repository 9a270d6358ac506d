"""Adaptive streaming: the HLS ladder (ladder.py), its playlists (playlists.py), the
storyboard (storyboard.py) and the routes that serve them (routes.py). ffmpeg itself runs
in media.py, as every tool does."""
