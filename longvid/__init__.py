"""longvid: streaming long video generation with prompt switches."""
