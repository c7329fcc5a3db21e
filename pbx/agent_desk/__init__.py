"""The agent page served at /agent/ (issue 17): sign-in, state, the call, a phone in the page."""
