"""
txreconnect's own tests: run them with C{trial tests}.
"""
