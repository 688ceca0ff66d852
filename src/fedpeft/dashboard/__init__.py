"""`fedpeft dashboard`: a local web page that watches a runs folder while runs write to it."""
