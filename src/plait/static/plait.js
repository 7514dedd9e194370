// plait.js: placeholder until the browser client lands
