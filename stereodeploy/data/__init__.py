"""Reading stereo data, preprocessing it and drawing training patches; no framework is imported here."""
