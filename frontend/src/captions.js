// The captions menu: "Off", or one of the video's caption tracks (the master playlist's
// SUBTITLES renditions). It sits in the player's controls of the watch page and of the embed,
// which both play through player.js. With hls.js the tracks are hls.js's subtitle tracks, and
// hls.js renders the chosen one into the <video>'s text tracks; with the browser's own HLS
// (Safari) they are the element's text tracks. Track names and languages come from the master:
// they are only ever set as text, never as HTML.

const OFF = "-1";

/** Build the menu (hidden until a video has captions) at the end of `controls`. */
export function createCaptionsMenu(controls) {
  const wrap = document.createElement("span");
  wrap.className = "captions-control";
  wrap.hidden = true;
  const label = document.createElement("label");
  label.htmlFor = "captions";
  label.textContent = "Captions";
  const select = document.createElement("select");
  select.id = "captions";
  wrap.append(label, select);
  if (controls) controls.append(wrap);

  // What the menu drives: { tracks(), choose(index), chosen(), detach() }, or null.
  let source = null;

  function fill() {
    const tracks = source ? source.tracks() : [];
    const options = [new Option("Off", OFF)];
    tracks.forEach((track, index) => {
      const option = new Option(trackName(track, index), String(index));
      if (track.lang) option.lang = track.lang;
      options.push(option);
    });
    select.replaceChildren(...options);
    select.value = source ? String(source.chosen()) : OFF;
    wrap.hidden = tracks.length === 0;
  }

  select.addEventListener("change", () => {
    if (source) source.choose(Number(select.value));
  });

  function use(next) {
    if (source) source.detach();
    source = next;
    fill();
  }

  return {
    select,
    /** Follow an hls.js player's subtitle tracks. */
    attachHls(hls) {
      use(hlsSource(hls, fill));
    },
    /** Follow the text tracks of a <video> playing HLS natively. */
    attachNative(video) {
      use(nativeSource(video, fill));
    },
    /** No video: an empty, hidden menu. */
    reset() {
      use(null);
    },
  };
}

function trackName(track, index) {
  return track.name || track.lang || `Track ${index + 1}`;
}

function hlsSource(hls, refresh) {
  const events = [
    window.Hls.Events.MANIFEST_PARSED,
    window.Hls.Events.SUBTITLE_TRACKS_UPDATED,
    window.Hls.Events.SUBTITLE_TRACK_SWITCH,
  ];
  for (const event of events) hls.on(event, refresh);
  return {
    tracks: () => hls.subtitleTracks || [],
    choose(index) {
      // -1 turns them off; hls.js then stops loading caption segments too.
      hls.subtitleDisplay = index >= 0;
      hls.subtitleTrack = index;
    },
    chosen: () => (hls.subtitleDisplay ? hls.subtitleTrack : -1),
    detach() {
      for (const event of events) hls.off(event, refresh);
    },
  };
}

function nativeSource(video, refresh) {
  const list = video.textTracks;
  const captions = () =>
    Array.from(list).filter((track) => track.kind === "subtitles" || track.kind === "captions");
  for (const event of ["addtrack", "removetrack", "change"]) list.addEventListener(event, refresh);
  return {
    tracks: () => captions().map((track) => ({ name: track.label, lang: track.language })),
    choose(index) {
      captions().forEach((track, i) => {
        track.mode = i === index ? "showing" : "disabled";
      });
    },
    chosen: () => captions().findIndex((track) => track.mode === "showing"),
    detach() {
      for (const event of ["addtrack", "removetrack", "change"]) {
        list.removeEventListener(event, refresh);
      }
    },
  };
}
