"""The online runtime: decoding, features, detectors, the processing core and its runners."""
